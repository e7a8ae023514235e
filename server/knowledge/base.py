"""The knowledge domain as the rest of the server sees it.

:class:`KnowledgeSearch` holds the indexes (vector and BM25, started with the server, saved
when it stops), hybrid search and the RAG retriever the row engine calls for LLM columns with
``rag_params``; :class:`Knowledge` is what KnowledgeService serves (search, EmbedFile). Both
are built by the composition root (``server/app.py``). Re-embedding after UpdateRows is the
row engine's (:meth:`RowEngine.update_rows`).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from pathlib import Path

from rowforge.server import tracing
from rowforge.server.errors import NotFound, RowforgeError
from rowforge.server.files.store import UploadMetadata
from rowforge.server.knowledge.dimensions import check_embedding_dimensions
from rowforge.server.knowledge.embed_file import ContentEmbedded, EmbedFileEvent, FileEmbedder
from rowforge.server.knowledge.indexes import KnowledgeIndexes
from rowforge.server.knowledge.rag import RagRetriever
from rowforge.server.knowledge.reader import Reader
from rowforge.server.knowledge.search import HybridSearcher, SearchOutcome
from rowforge.server.metrics import DISABLED, Metrics
from rowforge.server.providers import ModelRegistry
from rowforge.server.storage.db import Database
from rowforge.server.tables.model import TABLE_TYPES, TableSchema
from rowforge.server.tables.store import TableStore


class KnowledgeSearch:
    """The search side of knowledge tables: the indexes (vector and BM25, kept from the
    tables' change feed), hybrid search, and the RAG retriever the row engine calls.

    Args:
        db: The database.
        index_dir: Where the index files live.
        tables: The table store (schemas, rows, the change feed).
        models: The model registry (embedding and reranking models).
    """

    def __init__(self, *, db: Database, index_dir: Path, tables: TableStore,
                 models: ModelRegistry, memory_budget: int = 0,
                 metrics: Metrics = DISABLED) -> None:
        self.tables = tables
        self.models = models
        self.reader = Reader(db)
        self.indexes = KnowledgeIndexes(db, index_dir, self.reader,
                                        memory_budget=memory_budget, metrics=metrics)
        self.searcher = HybridSearcher(db=db, tables=tables, models=models,
                                       indexes=self.indexes, reader=self.reader)
        self.rag = RagRetriever(tables, self.searcher)
        #: What the start-up check found (one error per unusable knowledge table).
        self.dimension_problems: list[RowforgeError] = []

    async def start(self) -> None:
        self.tables.add_change_listener(self.indexes.notify)
        # Tables whose embedding model no longer fits their vectors: reported (ERROR log)
        # before the first request, refused when used (see knowledge/dimensions.py).
        self.dimension_problems = await check_embedding_dimensions(self.tables, self.models)
        await self.indexes.start()

    async def stop(self) -> None:
        await self.indexes.stop()
        self.reader.close()


class Knowledge:
    """Knowledge tables as KnowledgeService serves them: search and file embedding.

    Args:
        search: The indexes and searcher (started and stopped by the application).
        embedder: Runs EmbedFile / EmbedFileContent.
        tables: The table store.
    """

    def __init__(self, search: KnowledgeSearch, embedder: FileEmbedder,
                 tables: TableStore, metrics: Metrics = DISABLED) -> None:
        self.metrics = metrics
        self.search_side = search
        self.searcher = search.searcher
        self.files = embedder
        self.tables = tables

    async def knowledge_table(self, project_id: str, table_id: str) -> TableSchema:
        """The project's knowledge table ``table_id``.

        Raises:
            NotFound: ``TABLE_NOT_FOUND``; the message says so when the id names a table of
                another type (searches and files need a knowledge table).
        """
        try:
            return await self.tables.get_table(project_id, "knowledge", table_id)
        except NotFound as exc:
            if exc.reason != "TABLE_NOT_FOUND":
                raise
            others = []
            for kind in TABLE_TYPES:
                if kind == "knowledge":
                    continue
                try:
                    await self.tables.get_table(project_id, kind, table_id)
                except NotFound:
                    continue
                others.append(kind)
            if not others:
                raise
            raise NotFound(
                f"knowledge table {table_id!r} not found ({' and '.join(others)} table "
                f"{table_id!r} exists, but only knowledge tables can be searched or filled "
                "from files)", reason=exc.reason, metadata={**exc.metadata,
                                                           "otherTypes": ",".join(others)},
                resource_type=exc.resource_type, resource_name=exc.resource_name) from None

    async def search(self, schema: TableSchema, query: str, *, k: int = 0, where: str = "",
                     reranking_model: str = "",
                     columns: Sequence[str] | None = None) -> SearchOutcome:
        """Hybrid search; see :meth:`HybridSearcher.search`."""
        started = time.perf_counter()
        with tracing.span("knowledge.search", k=k, filtered=bool(where)):
            outcome = await self.searcher.search(schema, query, k=k, where=where,
                                                 reranking_model=reranking_model,
                                                 columns=columns)
        self.metrics.search(time.perf_counter() - started)
        return outcome

    def embed_file(self, schema: TableSchema, file_uri: str, *, chunk_size: int = 0,
                   chunk_overlap: int = 0) -> AsyncIterator[EmbedFileEvent]:
        """EmbedFile's events; see :meth:`FileEmbedder.run`."""
        return self.files.run(schema, file_uri, chunk_size=chunk_size,
                              chunk_overlap=chunk_overlap)

    async def embed_content(self, schema: TableSchema,
                            parts: AsyncIterable[UploadMetadata | bytes], *,
                            chunk_size: int = 0, chunk_overlap: int = 0) -> ContentEmbedded:
        """EmbedFileContent; see :meth:`FileEmbedder.run_content`."""
        return await self.files.run_content(schema, parts, chunk_size=chunk_size,
                                            chunk_overlap=chunk_overlap)
