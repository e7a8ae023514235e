"""Bulk reads of a knowledge table's rows for the vector indexes (raw vectors, not ``Row``s).

The table store's reads build a ``Row`` with every vector as a list of floats: right for an
API response, far too slow to load 50,000 vectors into an index. These reads return the stored
float32 bytes as they are, through the store's own layout (:mod:`rowforge.server.tables.layout`)
and ``where`` compiler, so they see exactly the rows the store sees.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa

from rowforge.server.storage.db import Database
from rowforge.server.tables import fulltext, layout
from rowforge.server.tables.codec import cell_from_stored
from rowforge.server.tables.model import (
    EMBEDDING_DTYPE,
    KT_FILE_ID,
    ColumnSchema,
    Row,
    TableSchema,
)
from rowforge.server.tables.row_store import micros_to_datetime
from rowforge.server.tables.values import from_stored
from rowforge.server.tables.where import compile_where

#: Ids per ``IN (...)`` list (well under SQLite's bound-parameter limit).
ID_CHUNK = 1000

#: A row's stored vectors, one entry per embedding column (None: no vector).
Vectors = list[bytes | None]


#: Built statements of the search hot path (building one costs more than running it).
_statements: dict[tuple[Any, ...], Any] = {}
_STATEMENTS_MAX = 512


def _cached(key: tuple[Any, ...], build: Callable[[], Any]) -> Any:
    stmt = _statements.get(key)
    if stmt is None:
        stmt = build()
        if len(_statements) >= _STATEMENTS_MAX:
            _statements.pop(next(iter(_statements)))
        _statements[key] = stmt
    return stmt


def _layout_key(schema: TableSchema, read: Sequence[ColumnSchema]) -> tuple[Any, ...]:
    return (schema.storage_id, tuple((c.storage_name, c.dtype) for c in schema.columns),
            tuple(c.storage_name for c in read))


def _vector_columns(schema: TableSchema) -> list[sa.ColumnElement[Any]]:
    table = layout.row_table(schema)
    return [table.c[layout.value_name(c)] for c in schema.columns if c.dtype == EMBEDDING_DTYPE]


def changed_vectors(conn: sa.Connection, schema: TableSchema, after: int,
                    limit: int) -> list[tuple[int, str, Vectors | None]]:
    """The next ``limit`` change-feed entries of the table after ``after``, each with its
    row's current vectors (None: the row no longer exists), in one query: the feed joined to
    the rows."""
    from rowforge.server.storage.knowledge_tables import knowledge_changes as feed

    def build() -> Any:
        table = layout.row_table(schema)
        return (sa.select(feed.c.id, feed.c.row_id, table.c[layout.ROW_ID],
                          *_vector_columns(schema))
                .select_from(feed.outerjoin(table, table.c[layout.ROW_ID] == feed.c.row_id))
                .where(feed.c.storage_id == sa.bindparam("sid"),
                       feed.c.id > sa.bindparam("after"))
                .order_by(feed.c.id).limit(sa.bindparam("limit")))

    stmt = _cached(("changes", *_layout_key(schema, ())), build)
    rows = conn.execute(stmt, {"sid": schema.storage_id, "after": after, "limit": limit})
    return [(int(r[0]), r[1], list(r[3:]) if r[2] is not None else None) for r in rows]


async def scan_vectors(db: Database, schema: TableSchema, after_seq: int,
                       limit: int) -> list[tuple[int, str, Vectors]]:
    """``(insertion sequence, row id, vectors)`` of the next ``limit`` rows after
    ``after_seq``, in insertion order (a full scan, page by page)."""
    table = layout.row_table(schema)
    seq = table.c[layout.SEQ]
    query = (sa.select(seq, table.c[layout.ROW_ID], *_vector_columns(schema))
             .where(seq > after_seq).order_by(seq).limit(limit))
    async with db.read() as conn:
        return [(int(r[0]), r[1], list(r[2:])) for r in await conn.execute(query)]


def matching_ids(conn: sa.Connection, schema: TableSchema, where: str) -> list[str]:
    """Ids of the rows matching a ``where`` filter (compiled by the tables' compiler).

    Raises:
        InvalidArgument: the filter does not parse or names unknown columns (field ``where``).
    """
    table = layout.row_table(schema)
    condition = compile_where(where, schema, table, conn.dialect.name)
    return list(conn.scalars(sa.select(table.c[layout.ROW_ID]).where(condition)))


async def sample_texts(db: Database, schema: TableSchema, columns: Sequence[str],
                       every: int, limit: int) -> list[tuple[str | None, ...]]:
    """The values of ``columns`` in about one row out of ``every`` (at most ``limit`` rows):
    a sample for term statistics."""
    table = layout.row_table(schema)
    cols = [table.c[layout.value_name(c)] for c in schema.columns if c.id in columns]
    query = sa.select(*cols).limit(limit)
    if every > 1:
        query = query.where(table.c[layout.SEQ] % every == 0)
    async with db.read() as conn:
        return [tuple(r) for r in await conn.execute(query)]


def searchable_text_columns(schema: TableSchema) -> list[str]:
    """The str columns knowledge search matches words in: all but the file URI column."""
    return [c.id for c in schema.columns if c.dtype == "str" and c.id != KT_FILE_ID]


def _row_columns(schema: TableSchema, read: Sequence[ColumnSchema]) -> list[Any]:
    table = layout.row_table(schema)
    out: list[Any] = [table.c[layout.UPDATED_AT]]
    for col in read:
        out += [table.c[layout.value_name(col)], table.c[layout.state_name(col)]]
    return out


def _to_row(row_id: str, updated_at: int, values: Sequence[Any],
            read: Sequence[ColumnSchema]) -> Row:
    cells = {}
    for i, col in enumerate(read):
        value = values[2 * i]
        if value is not None and col.dtype in (EMBEDDING_DTYPE, "bool"):
            value = from_stored(col.dtype, value)
        cells[col.id] = cell_from_stored(value, values[2 * i + 1])
    return Row(id=row_id, update_time=micros_to_datetime(updated_at), cells=cells)


def read_rows(conn: sa.Connection, schema: TableSchema, row_ids: Sequence[str],
              read: Sequence[ColumnSchema]) -> dict[str, Row]:
    """The rows that still exist among ``row_ids`` (at most :data:`ID_CHUNK`), with the
    ``read`` columns, by id (the table store's ``get_rows`` raises on a missing id; a row
    deleted since the vector search is no error here)."""
    if not row_ids:
        return {}

    def build() -> Any:
        table = layout.row_table(schema)
        return sa.select(table.c[layout.ROW_ID], *_row_columns(schema, read)).where(
            table.c[layout.ROW_ID].in_(sa.bindparam("ids", expanding=True)))

    stmt = _cached(("rows", *_layout_key(schema, read)), build)
    records = conn.execute(stmt, {"ids": list(row_ids[:ID_CHUNK])}).all()
    return {r[0]: _to_row(r[0], r[1], r[2:], read) for r in records}


def fulltext_rows(conn: sa.Connection, schema: TableSchema, words: Sequence[str], *,
                  search: Sequence[str], read: Sequence[ColumnSchema], limit: int,
                  where: str = "") -> list[tuple[Row, float]]:
    """BM25 search for rows holding any of ``words`` (tokens of
    :func:`rowforge.server.tables.fulltext.tokens`) in the ``search`` columns, best first,
    returned with the ``read`` columns in the same query: the table store's ranked full-text
    query (escaping included) plus those columns.

    Raises:
        InvalidArgument: a bad ``where`` filter.
    """
    if not words:
        return []
    dialect = conn.dialect.name
    cols = [c for c in schema.columns if c.id in search]

    def build(query: str) -> Any:
        stmt = fulltext.ranked_select(schema, query, cols, dialect, any_word=True)
        if stmt is None:
            return None
        table = layout.row_table(schema)
        stmt = stmt.add_columns(*_row_columns(schema, read))
        if where:
            stmt = stmt.where(compile_where(where, schema, table, dialect))
        return stmt.limit(limit)

    if dialect == "sqlite":
        # The words travel in one bound parameter: the statement is built once per table,
        # columns, filter and limit, and run with this query's (escaped) match expression.
        key = ("fts", *_layout_key(schema, read), tuple(c.storage_name for c in cols), where,
               limit)
        stmt = _cached(key, lambda: build("placeholder"))
        params = {"fts_query": fulltext._fts5_query(list(words), cols, True)}
        records = conn.execute(stmt, params).all() if stmt is not None else []
    else:  # tsquery lexemes are bound inside the built statement
        stmt = build(" ".join(words))
        records = conn.execute(stmt).all() if stmt is not None else []
    return [(_to_row(r[0], r[2], r[3:], read), float(r[1])) for r in records]
