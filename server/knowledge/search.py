"""Hybrid search of a knowledge table: vector top-n and BM25 top-n, fused with RRF, optionally
reranked.

1. Checks (before any work): ``k`` in 1..1000 (0: 10), a non-empty query, known result
   columns, an existing reranking model, a ``where`` filter that compiles.
2. With a filter, the ids of the matching rows (one SQL query); both sides then rank only
   those, exactly.
3. The lexical side (the table's BM25 index, :mod:`.lexical_index`: exact top ``n`` over every
   word of the query) runs in a worker thread while the query is embedded with the table's
   embedding model; then the vector side (nearest ``n`` rows over every embedding column),
   the fusion and the read of the fused rows run in one more worker-thread hop (SQLite; on
   PostgreSQL the read is asyncpg's). A query embedded inline (the built-in model) needs no
   overlap: then both sides, the fusion and the read are one hop.
4. Reciprocal Rank Fusion (:func:`rowforge.fastcore.rrf`, k=60) of the two id lists; only the
   rows returned are read (``k``, or the reranker's candidates): a row deleted since the
   indexes saw it is left out and the next fused row takes its place.
5. Optionally a reranking model orders the fused candidates; if it fails, the fused order
   stands and the outcome says why (``rerank_error``).

``n`` (candidates per side) is ``max(2k, 20)`` capped at 1000: fusion needs some depth.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

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
from rowforge.server.knowledge.indexes import KnowledgeIndexes
from rowforge.server.knowledge.reader import Reader
from rowforge.server.knowledge.table_index import TableIndex
from rowforge.server.providers import ModelRegistry, ModelSpec, embed, rerank
from rowforge.server.storage.db import Database
from rowforge.server.tables import row_reads
from rowforge.server.tables.embedding_model import check_embedding_model
from rowforge.server.tables.model import (
    KT_TEXT,
    KT_TITLE,
    ColumnSchema,
    EmbedGenConfig,
    Row,
    TableSchema,
)

log = logging.getLogger("rowforge.knowledge")

MAX_K = 1000
DEFAULT_K = 10
RRF_K = 60
MAX_QUERY_CHARS = 10_000
#: Characters of a row given to the reranker.
RERANK_DOC_CHARS = 4000

T = TypeVar("T")
Result = tuple[str, float]


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


class HybridSearcher:
    """Runs hybrid searches (see the module docstring).

    Args:
        db: The database (filters are compiled to SQL over it).
        tables: The table store: full text and row reads.
        models: The model registry.
        indexes: The knowledge tables' indexes (vectors and BM25).
        reader: Runs the read queries (default: one for ``db``).
    """

    def __init__(self, *, db: Database, tables: Any, models: ModelRegistry,
                 indexes: KnowledgeIndexes, reader: Reader | None = None) -> None:
        self.db = db
        self.tables = tables
        self.models = models
        self.indexes = indexes
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
            row_reads.select_columns(schema, columns)
        if not reranking_model:
            return None
        try:
            return self.models.require(reranking_model, "rerank")
        except NotFound as exc:
            raise NotFound(exc.message, reason=exc.reason, metadata=exc.metadata,
                           resource_type="model", resource_name=reranking_model,
                           field_violations=[FieldViolation(
                               reranker_field, exc.message)]) from None
        except InvalidArgument as exc:
            raise InvalidArgument.field(
                reranker_field, exc.message.split(": ", 1)[-1], reason=exc.reason,
                metadata=exc.metadata) from None

    def embedding_model(self, schema: TableSchema) -> ModelSpec:
        """The model that embedded the table (FAILED_PRECONDITION if no longer configured,
        or ``EMBEDDING_MODEL_CHANGED`` if now configured for vectors of another length)."""
        model_id = schema.embedding_model or next(
            (c.gen_config.embedding_model for c in schema.columns
             if isinstance(c.gen_config, EmbedGenConfig)), "")
        try:
            spec = self.models.require(model_id, "embed") if model_id \
                else self.models.default("embed")
        except (NotFound, InvalidArgument) as exc:
            raise FailedPrecondition(
                f"knowledge table {schema.id!r} was embedded with model {model_id!r}, which "
                f"cannot embed queries on this server: {exc.message}",
                reason="EMBEDDING_MODEL_UNAVAILABLE",
                metadata={"tableId": schema.id, "model": model_id}) from None
        for column in schema.columns:
            if isinstance(column.gen_config, EmbedGenConfig):
                check_embedding_model(schema, column, spec)
        return spec

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
            row_reads.check_where(schema, where, self.db.dialect)
        wanted = row_reads.select_columns(schema, columns)
        read = wanted
        if reranker is not None:  # the reranker reads the title and text
            needed = {c.id for c in wanted} | {KT_TITLE, KT_TEXT}
            read = [c for c in schema.columns if c.id in needed]
        n = candidates(k)
        try:
            vector, lexical, fused, rows = await self._sides(
                schema, query, n, where, read, top_k=n if reranker else k)
        except sa.exc.DBAPIError:
            await self.indexes.check_exists(schema)  # NOT_FOUND if deleted meanwhile
            raise
        lexical_ids = [row_id for row_id, _ in lexical]
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

    async def _sides(self, schema: TableSchema, query: str, n: int, where: str,
                     read: list[ColumnSchema], top_k: int,
                     ) -> tuple[list[str], list[Result], list[Result], dict[str, Row]]:
        """The vector side's ids and the lexical side's (id, score) pairs, best first, their
        fusion's best ``top_k`` rows that still exist (id, RRF score), and those rows
        (``read`` columns)."""
        spec = self.embedding_model(schema)

        async def allowed_ids() -> set[str] | None:
            if not where:
                return None
            return set(await self.reader.run(row_reads.matching_ids, schema, where))

        async def query_vector() -> Any:
            result = await embed(spec, [query], is_query=True)
            return result.vectors[0]

        embedding = asyncio.ensure_future(query_vector())
        filtering = asyncio.ensure_future(allowed_ids())
        filtering.add_done_callback(_retrieve)
        try:
            # Pinned for the whole search: the memory budget never evicts it meanwhile.
            async with self.indexes.using(schema) as index:
                return await self._search_index(schema, index, query, n, read, top_k,
                                                embedding, filtering)
        finally:
            for task in (embedding, filtering):
                if not task.done():
                    task.cancel()

    async def _search_index(self, schema: TableSchema, index: TableIndex, query: str, n: int,
                            read: list[ColumnSchema], top_k: int,
                            embedding: asyncio.Future[Any],
                            filtering: asyncio.Future[set[str] | None],
                            ) -> tuple[list[str], list[Result], list[Result], dict[str, Row]]:
        allowed = await filtering
        if allowed is not None and not allowed:
            return [], [], [], {}
        reader = self.reader

        def vector_side_and_rows(unit: Any, lexical: list[Result],
                                 ) -> tuple[list[str], list[Result], list[Result], dict[str, Row]]:
            ids = _nearest(index, unit, n, allowed)
            fused, rows = _read_fused(
                _fuse(ids, [row_id for row_id, _ in lexical]), top_k,
                lambda wanted: reader.in_thread(row_reads.read_rows, schema, wanted, read))
            return ids, lexical, fused, rows

        if reader.threaded and embedding.done():
            # The query is embedded already (a built-in model embeds it inline): both sides,
            # the fusion and the row read in one worker-thread hop.
            unit = _unit(index, embedding.result())
            return await asyncio.to_thread(
                lambda: vector_side_and_rows(unit, index.search_text(query, n, allowed)))
        # BM25 while the query is being embedded.
        lexical = await asyncio.to_thread(index.search_text, query, n, allowed)
        unit = _unit(index, await embedding)
        if reader.threaded:  # graph search, fusion and row read in one worker-thread hop
            return await asyncio.to_thread(vector_side_and_rows, unit, lexical)
        ids = await asyncio.to_thread(_nearest, index, unit, n, allowed)
        order = _fuse(ids, [row_id for row_id, _ in lexical])
        fused: list[Result] = []
        rows: dict[str, Row] = {}
        start = 0
        while len(fused) < top_k and start < len(order):  # PostgreSQL: awaited reads
            batch = order[start:start + top_k - len(fused)]
            start += len(batch)
            found = await reader.run(row_reads.read_rows, schema, [r for r, _ in batch], read)
            _keep_found(batch, found, fused, rows)
        return ids, lexical, fused, rows


def _unit(index: TableIndex, vector: Any) -> Any:
    """The query vector at unit length (checked against the index), or None for a zero or
    non-finite one (no vector side then)."""
    norm = float(np.linalg.norm(vector))
    if not (np.isfinite(norm) and norm > 0.0):
        return None
    index.check_query(vector)
    return (vector / norm).astype(np.float32)


def _fuse(vector_ids: list[str], lexical_ids: list[str]) -> list[Result]:
    """Every id of both lists in RRF order (k=60), with its score."""
    fused = rrf([vector_ids, lexical_ids], k=RRF_K,
                top_k=max(1, len(vector_ids) + len(lexical_ids)))
    return cast("list[Result]", fused)  # the ids given are strings


def _read_fused(order: list[Result], top_k: int,
                read: Callable[[list[str]], dict[str, Row]],
                ) -> tuple[list[Result], dict[str, Row]]:
    """The first ``top_k`` ids of ``order`` whose rows still exist, and those rows: only the
    rows returned are read (a row deleted since the search makes the next one read)."""
    fused: list[Result] = []
    rows: dict[str, Row] = {}
    start = 0
    while len(fused) < top_k and start < len(order):
        batch = order[start:start + top_k - len(fused)]
        start += len(batch)
        _keep_found(batch, read([row_id for row_id, _ in batch]), fused, rows)
    return fused, rows


def _keep_found(batch: list[Result], found: dict[str, Row], fused: list[Result],
                rows: dict[str, Row]) -> None:
    for row_id, score in batch:
        row = found.get(row_id)
        if row is not None:
            fused.append((row_id, score))
            rows[row_id] = row


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Mark a helper task's failure as seen (the search may have failed first)."""
    if not task.cancelled():
        task.exception()


def _nearest(index: TableIndex, unit: Any, n: int, allowed: set[str] | None) -> list[str]:
    if unit is None:  # a zero query vector: no vector side
        return []
    return [row_id for row_id, _ in index.search(unit, n, allowed)]


def _document(row: Row) -> str:
    title = row.cells.get(KT_TITLE)
    text = row.cells.get(KT_TEXT)
    parts = [str(c.value) for c in (title, text) if c is not None and c.value]
    if not parts:  # a knowledge table's fixed columns are always there; be safe anyway
        parts = [str(c.value) for c in row.cells.values()
                 if isinstance(c.value, str) and c.value]
    return "\n".join(parts)[:RERANK_DOC_CHARS]

