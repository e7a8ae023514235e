"""The knowledge domain as the rest of the server sees it: ``app.knowledge`` and ``app.rag``.

:func:`install_knowledge` attaches one :class:`Knowledge` to the app (idempotent): the vector
indexes (started with the app, saved when it stops), hybrid search, EmbedFile, the RAG hook the
row engine calls for LLM columns with ``rag_params``, and re-embedding after UpdateRows.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterable, AsyncIterator, Mapping, Sequence
from typing import Any

from rowforge.server.errors import NotFound, RowforgeError
from rowforge.server.files.store import UploadMetadata
from rowforge.server.knowledge.dimensions import check_embedding_dimensions
from rowforge.server.knowledge.embed_file import ContentEmbedded, EmbedFileEvent, FileEmbedder
from rowforge.server.knowledge.indexes import KnowledgeIndexes
from rowforge.server.knowledge.rag import RagRetriever
from rowforge.server.knowledge.reader import Reader
from rowforge.server.knowledge.search import HybridSearcher, SearchOutcome
from rowforge.server.tables.model import TABLE_TYPES, EmbedGenConfig, TableSchema

log = logging.getLogger("rowforge.knowledge")


class Knowledge:
    """Knowledge tables: search, file embedding, RAG, index upkeep.

    Args:
        app: The application (``db``, ``data_dir``, ``models``, ``tables``; ``files`` and
            ``engine`` are looked up when used).
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self.reader = Reader(app.db)
        self.indexes = KnowledgeIndexes(app.db, app.data_dir / "indexes", self.reader)
        self.searcher = HybridSearcher(db=app.db, tables=app.tables, models=app.models,
                                       indexes=self.indexes, reader=self.reader)
        self.rag = RagRetriever(app.tables, self.searcher)
        self.files = FileEmbedder(app)
        #: What the start-up check found (one error per unusable knowledge table).
        self.dimension_problems: list[RowforgeError] = []

    async def start(self) -> None:
        rows = getattr(self.app.tables, "rows", None)
        listeners = getattr(rows, "change_listeners", None)
        if listeners is not None and self.indexes.notify not in listeners:
            listeners.append(self.indexes.notify)
        # Tables whose embedding model no longer fits their vectors: reported (ERROR log)
        # before the first request, refused when used (see knowledge/dimensions.py).
        self.dimension_problems = await check_embedding_dimensions(self.app.tables,
                                                                   self.app.models)
        await self.indexes.start()

    async def stop(self) -> None:
        await self.indexes.stop()
        self.reader.close()

    async def knowledge_table(self, project_id: str, table_id: str) -> TableSchema:
        """The project's knowledge table ``table_id``.

        Raises:
            NotFound: ``TABLE_NOT_FOUND``; the message says so when the id names a table of
                another type (searches and files need a knowledge table).
        """
        try:
            return await self.app.tables.get_table(project_id, "knowledge", table_id)
        except NotFound as exc:
            if exc.reason != "TABLE_NOT_FOUND":
                raise
            others = []
            for kind in TABLE_TYPES:
                if kind == "knowledge":
                    continue
                try:
                    await self.app.tables.get_table(project_id, kind, table_id)
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
        return await self.searcher.search(schema, query, k=k, where=where,
                                          reranking_model=reranking_model, columns=columns)

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

    async def rows_updated(self, schema: TableSchema,
                           updates: Mapping[str, Mapping[str, Any]]) -> None:
        """Re-embed the embedding columns whose source text changed in ``updates`` (rows of
        a knowledge table), through the row engine: batched per column, a failure is an ERROR
        cell (and the row drops out of vector search) rather than a failed UpdateRows. A
        vector given in the same update is kept (not re-embedded)."""
        if schema.table_type != "knowledge":
            return
        engine = getattr(self.app, "engine", None)
        if engine is None:
            log.warning("rows of %s changed but no row engine can re-embed them", schema.id)
            return
        runs = []
        for col in schema.columns:
            config = col.gen_config
            if not isinstance(config, EmbedGenConfig):
                continue
            ids = [row_id for row_id, values in updates.items()
                   if config.source_column in values and col.id not in values]
            if ids:
                runs.append(engine.regen_rows(schema, ids, strategy="run_selected",
                                              output_column=col.id))
        if runs:
            await asyncio.gather(*runs)


def install_knowledge(app: Any) -> Knowledge:
    """``app.knowledge`` (and ``app.rag``), created on first call, started and stopped with
    the app."""
    knowledge = getattr(app, "knowledge", None)
    if isinstance(knowledge, Knowledge):
        return knowledge
    knowledge = Knowledge(app)
    app.knowledge = knowledge
    app.rag = knowledge.rag
    app.on_start(knowledge.start)
    app.on_stop(knowledge.stop)
    return knowledge
