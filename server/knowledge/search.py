"""Hybrid search of a knowledge table: vector top-n and BM25 top-n, fused with RRF, optionally
reranked.

1. Checks (before any work): ``k`` in 1..1000 (0: 10), a non-empty query, known result
   columns, an existing reranking model, a ``where`` filter that compiles.
2. Concurrently: the vector side (query embedded with the table's embedding model; nearest
   ``n`` rows over every embedding column, in a worker thread; with a filter, only among the
   matching rows) and the lexical side (the table store's BM25 full-text search over the text
   columns, any query word, the same filter in SQL; words chosen by :mod:`.lexical`).
3. Reciprocal Rank Fusion (:func:`rowforge.fastcore.rrf`, k=60) of the two id lists.
4. Optionally a reranking model orders the fused candidates; if it fails, the fused order
   stands and the outcome says why (``rerank_error``).
5. Rows come back with the lexical query itself, and for the vector side through the table
   store while BM25 still runs; rows deleted meanwhile are left out.

``n`` (candidates per side) is ``max(2k, 20)`` capped at 1000: fusion needs some depth.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import sqlalchemy as sa

from rowforge.fastcore import rrf
from rowforge.server.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    RowforgeError,
    Violations,
)
from rowforge.server.knowledge import row_reads
from rowforge.server.knowledge.indexes import KnowledgeIndexes
from rowforge.server.knowledge.lexical import LexicalPlanner
from rowforge.server.knowledge.reader import Reader
from rowforge.server.providers import ModelRegistry, ModelSpec, embed, rerank
from rowforge.server.storage.db import Database
from rowforge.server.tables.layout import row_table
from rowforge.server.tables.model import (
    KT_TEXT,
    KT_TITLE,
    ColumnSchema,
    EmbedGenConfig,
    Row,
    TableSchema,
)
from rowforge.server.tables.row_store import select_columns
from rowforge.server.tables.where import compile_where

log = logging.getLogger("rowforge.knowledge")

MAX_K = 1000
DEFAULT_K = 10
RRF_K = 60
MAX_QUERY_CHARS = 10_000
#: Characters of a row given to the reranker.
RERANK_DOC_CHARS = 4000

T = TypeVar("T")


def check_k(k: int, field: str = "k") -> int:
    """``k`` with 0 meaning the default; INVALID_ARGUMENT outside 1..1000."""
    if k == 0:
        return DEFAULT_K
    if not 1 <= k <= MAX_K:
        raise InvalidArgument.field(field, f"must be between 1 and {MAX_K} (0: {DEFAULT_K}); "
                                           f"got {k}", reason="K_OUT_OF_RANGE")
    return k


def candidates(k: int) -> int:
    """How many rows each side contributes to the fusion."""
    return min(MAX_K, max(2 * k, 20))


@dataclass(frozen=True)
class Hit:
    """One result: the row, its final score (RRF, or the reranker's), and its 1-based ranks
    in the vector and lexical lists (0: not in that list)."""

    row: Row
    score: float
    vector_rank: int
    lexical_rank: int


@dataclass(frozen=True)
class SearchOutcome:
    """Hits best first, and whether a reranker ordered them (or why it could not)."""

    hits: list[Hit]
    reranked: bool = False
    rerank_error: str = ""


async def concurrently(*aws: Awaitable[T]) -> list[T]:
    """``asyncio.gather`` that cancels the others when one fails."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks)
        raise


class HybridSearcher:
    """Runs hybrid searches (see the module docstring).

    Args:
        db: The database (filters are compiled to SQL over it).
        tables: The table store (``app.tables``): full text and row reads.
        models: The model registry.
        indexes: The vector indexes.
        lexical: Chooses the words of the BM25 query.
        reader: Runs the read queries (default: one for ``db``).
    """

    def __init__(self, *, db: Database, tables: Any, models: ModelRegistry,
                 indexes: KnowledgeIndexes, lexical: LexicalPlanner,
                 reader: Reader | None = None) -> None:
        self.db = db
        self.tables = tables
        self.models = models
        self.indexes = indexes
        self.lexical = lexical
        self.reader = reader or Reader(db)

    # -- checks ----------------------------------------------------------------------------

    def check(self, schema: TableSchema, query: str, *, columns: Sequence[str] | None,
              reranking_model: str, query_field: str = "query",
              reranker_field: str = "reranking_model") -> ModelSpec | None:
        """Validate a search's arguments; returns the reranking model, if any.

        Raises:
            InvalidArgument: empty or too long query, unknown columns, a model that cannot
                rerank. NotFound: an unknown reranking model.
        """
        v = Violations()
        v.check(bool(query.strip()), query_field, "must not be empty")
        v.check(len(query) <= MAX_QUERY_CHARS, query_field,
                f"must be at most {MAX_QUERY_CHARS} characters (got {len(query)})")
        v.raise_if_any()
        if columns:
            select_columns(schema, columns)
        if not reranking_model:
            return None
        try:
            return self.models.require(reranking_model, "rerank")
        except NotFound as exc:
            raise NotFound(exc.message, reason=exc.reason, metadata=exc.metadata,
                           resource_type="model", resource_name=reranking_model,
                           field_violations=[FieldViolation(
                               reranker_field, f"unknown model {reranking_model!r}")]) from None
        except InvalidArgument as exc:
            raise InvalidArgument.field(
                reranker_field, exc.message.split(": ", 1)[-1], reason=exc.reason,
                metadata=exc.metadata) from None

    def embedding_model(self, schema: TableSchema) -> ModelSpec:
        """The model that embedded the table (FAILED_PRECONDITION if no longer configured)."""
        model_id = schema.embedding_model or next(
            (c.gen_config.embedding_model for c in schema.columns
             if isinstance(c.gen_config, EmbedGenConfig)), "")
        try:
            return self.models.require(model_id, "embed") if model_id \
                else self.models.default("embed")
        except (NotFound, InvalidArgument) as exc:
            raise FailedPrecondition(
                f"knowledge table {schema.id!r} was embedded with model {model_id!r}, which "
                f"cannot embed queries on this server: {exc.message}",
                reason="EMBEDDING_MODEL_UNAVAILABLE",
                metadata={"tableId": schema.id, "model": model_id}) from None

    # -- search ----------------------------------------------------------------------------

    async def search(self, schema: TableSchema, query: str, *, k: int = 0, where: str = "",
                     reranking_model: str = "", columns: Sequence[str] | None = None,
                     ) -> SearchOutcome:
        """Search a knowledge table.

        Raises:
            InvalidArgument: bad ``k``, query, columns, ``where``; a model that cannot rerank.
            NotFound: unknown reranking model; the table deleted meanwhile.
            FailedPrecondition: the table's embedding model is not available.
            Unavailable / ResourceExhausted / DeadlineExceeded: the embedding model failed.
        """
        k = check_k(k)
        reranker = self.check(schema, query, columns=columns, reranking_model=reranking_model)
        where = where.strip()
        if where:
            # Compiles (and validates) the filter before anything runs.
            compile_where(where, schema, row_table(schema), self.db.dialect)
        wanted = select_columns(schema, columns)
        read = wanted
        if reranker is not None:  # the reranker reads the title and text
            needed = {c.id for c in wanted} | {KT_TITLE, KT_TEXT}
            read = [c for c in schema.columns if c.id in needed]
        n = candidates(k)
        try:
            (vector, rows), lexical = await concurrently(
                self._vector_side(schema, query, n, where, read),
                self._lexical_side(schema, query, n, where, read))
        except sa.exc.DBAPIError:
            await self.indexes.check_exists(schema)  # NOT_FOUND if deleted meanwhile
            raise
        lexical_ids = []
        for row, _ in lexical:
            rows.setdefault(row.id, row)
            lexical_ids.append(row.id)
        fused = [(row_id, score) for row_id, score in
                 rrf([vector, lexical_ids], k=RRF_K, top_k=n if reranker else k)
                 if row_id in rows]  # a vector hit deleted since the search is left out
        vector_rank = {row_id: i for i, row_id in enumerate(vector, start=1)}
        lexical_rank = {row_id: i for i, row_id in enumerate(lexical_ids, start=1)}
        keep = {c.id for c in wanted}

        def hit(row_id: str, score: float) -> Hit:
            row = rows[row_id]
            if read is not wanted:
                row = Row(row.id, row.update_time,
                          {c: cell for c, cell in row.cells.items() if c in keep})
            return Hit(row, score, vector_rank.get(row_id, 0), lexical_rank.get(row_id, 0))

        if reranker is None:
            return SearchOutcome([hit(row_id, score) for row_id, score in fused])
        documents = [_document(rows[row_id]) for row_id, _ in fused]
        try:
            ranked = await rerank(reranker, query, documents, top_n=k) if documents else []
        except asyncio.CancelledError:
            raise
        except RowforgeError as exc:
            log.info("reranking with %s failed, keeping the fused order: %s", reranker.id, exc)
            return SearchOutcome([hit(r, s) for r, s in fused[:k]], False,
                                 f"reranking model {reranker.id!r} failed: {exc.message}")
        except Exception:
            log.exception("reranking with %s failed", reranker.id)
            return SearchOutcome([hit(r, s) for r, s in fused[:k]], False,
                                 f"reranking model {reranker.id!r} failed (internal error)")
        return SearchOutcome([hit(fused[i][0], score) for i, score in ranked[:k]], True)

    async def _vector_side(self, schema: TableSchema, query: str, n: int, where: str,
                           read: list[ColumnSchema]) -> tuple[list[str], dict[str, Row]]:
        """The nearest rows' ids, best first, and those rows (read while BM25 runs)."""
        spec = self.embedding_model(schema)

        async def allowed_ids() -> set[str] | None:
            if not where:
                return None
            return set(await self.reader.run(row_reads.matching_ids, schema, where))

        async def query_vector() -> Any:
            result = await embed(spec, [query], is_query=True)
            return result.vectors[0]

        allowed, vector, index = await concurrently(
            allowed_ids(), query_vector(), self.indexes.get(schema))
        norm = float(np.linalg.norm(vector))
        if not np.isfinite(norm) or norm == 0.0 or (allowed is not None and not allowed):
            return [], {}
        index.check_query(vector)
        unit = (vector / norm).astype(np.float32)
        reader = self.reader
        if reader.threaded:  # graph search and row read in one worker-thread hop

            def search_and_read() -> tuple[list[str], dict[str, Row]]:
                ids = [row_id for row_id, _ in index.search(unit, n, allowed)]
                return ids, reader.in_thread(row_reads.read_rows, schema, ids, read)

            return await asyncio.to_thread(search_and_read)
        found = await asyncio.to_thread(index.search, unit, n, allowed)
        ids = [row_id for row_id, _ in found]
        return ids, await reader.run(row_reads.read_rows, schema, ids, read)

    async def _lexical_side(self, schema: TableSchema, query: str, n: int, where: str,
                            read: list[ColumnSchema]) -> list[tuple[Row, float]]:
        """The BM25 top rows (with their ``read`` columns) and scores, best first."""
        index = await self.indexes.get(schema)
        words = await self.lexical.plan(schema, query, len(index))
        if not words:
            return []
        return await self.reader.run(
            row_reads.fulltext_rows, schema, words,
            search=row_reads.searchable_text_columns(schema), read=read, limit=n, where=where)


def _document(row: Row) -> str:
    title = row.cells.get(KT_TITLE)
    text = row.cells.get(KT_TEXT)
    parts = [str(c.value) for c in (title, text) if c is not None and c.value]
    if not parts:  # a knowledge table's fixed columns are always there; be safe anyway
        parts = [str(c.value) for c in row.cells.values()
                 if isinstance(c.value, str) and c.value]
    return "\n".join(parts)[:RERANK_DOC_CHARS]

