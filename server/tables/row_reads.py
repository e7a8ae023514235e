"""The tables domain's reads for derived indexes (the knowledge domain uses these, never the
tables' SQL layout): bulk reads of a knowledge table's rows (raw vectors and texts, not
``Row``s), the change feed joined to the rows, the row reads of the search hot path, filters,
and which knowledge tables exist.

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
from rowforge.server.storage.user_tables import user_tables
from rowforge.server.tables import layout
from rowforge.server.tables.change_feed import text_columns
from rowforge.server.tables.codec import cell_from_stored
from rowforge.server.tables.model import (
    EMBEDDING_DTYPE,
    ColumnSchema,
    Row,
    TableSchema,
)
from rowforge.server.tables.row_store import micros_to_datetime, select_columns
from rowforge.server.tables.schema_store import schema_from_row
from rowforge.server.tables.values import from_stored
from rowforge.server.tables.where import compile_where

__all__ = ["ID_CHUNK", "Texts", "Vectors", "changed_rows", "check_where", "knowledge_schemas",
           "knowledge_storage_ids", "matching_ids", "read_rows", "scan_rows", "select_columns",
           "storage_exists"]

#: Ids per ``IN (...)`` list (well under SQLite's bound-parameter limit).
ID_CHUNK = 1000

#: A row's stored vectors, one entry per embedding column (None: no vector).
Vectors = list[bytes | None]
#: A row's texts the BM25 index holds (Title, Text; None: empty).
Texts = list[str | None]


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


def _text_columns(schema: TableSchema) -> list[sa.ColumnElement[Any]]:
    table = layout.row_table(schema)
    return [table.c[name] for name in text_columns(schema)]


def changed_rows(conn: sa.Connection, schema: TableSchema, after: int, limit: int,
                 ) -> list[tuple[int, str, Vectors | None, Texts | None]]:
    """The next ``limit`` change-feed entries of the table after ``after``, each with its
    row's current vectors and texts (None: the row no longer exists), in one query: the feed
    joined to the rows."""
    from rowforge.server.storage.knowledge_tables import knowledge_changes as feed

    vectors = len(_vector_columns(schema))

    def build() -> Any:
        table = layout.row_table(schema)
        return (sa.select(feed.c.id, feed.c.row_id, table.c[layout.ROW_ID],
                          *_vector_columns(schema), *_text_columns(schema))
                .select_from(feed.outerjoin(table, table.c[layout.ROW_ID] == feed.c.row_id))
                .where(feed.c.storage_id == sa.bindparam("sid"),
                       feed.c.id > sa.bindparam("after"))
                .order_by(feed.c.id).limit(sa.bindparam("limit")))

    stmt = _cached(("changes", *_layout_key(schema, ())), build)
    rows = conn.execute(stmt, {"sid": schema.storage_id, "after": after, "limit": limit})
    return [(int(r[0]), r[1], list(r[3:3 + vectors]) if r[2] is not None else None,
             list(r[3 + vectors:]) if r[2] is not None else None) for r in rows]


def scan_rows(conn: sa.Connection, schema: TableSchema, after_seq: int,
              limit: int) -> list[tuple[int, str, Vectors, Texts]]:
    """``(insertion sequence, row id, vectors, texts)`` of the next ``limit`` rows after
    ``after_seq``, in insertion order (a full scan, page by page)."""
    table = layout.row_table(schema)
    seq = table.c[layout.SEQ]
    vectors = _vector_columns(schema)
    query = (sa.select(seq, table.c[layout.ROW_ID], *vectors, *_text_columns(schema))
             .where(seq > after_seq).order_by(seq).limit(limit))
    cut = 2 + len(vectors)
    return [(int(r[0]), r[1], list(r[2:cut]), list(r[cut:])) for r in conn.execute(query)]


def matching_ids(conn: sa.Connection, schema: TableSchema, where: str) -> list[str]:
    """Ids of the rows matching a ``where`` filter (compiled by the tables' compiler).

    Raises:
        InvalidArgument: the filter does not parse or names unknown columns (field ``where``).
    """
    table = layout.row_table(schema)
    condition = compile_where(where, schema, table, conn.dialect.name)
    return list(conn.scalars(sa.select(table.c[layout.ROW_ID]).where(condition)))


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
    """The rows that still exist among ``row_ids``, with the ``read`` columns, by id (the
    table store's ``get_rows`` raises on a missing id; a row deleted since the search is no
    error here). One query per :data:`ID_CHUNK` ids."""
    if not row_ids:
        return {}

    def build() -> Any:
        table = layout.row_table(schema)
        return sa.select(table.c[layout.ROW_ID], *_row_columns(schema, read)).where(
            table.c[layout.ROW_ID].in_(sa.bindparam("ids", expanding=True)))

    stmt = _cached(("rows", *_layout_key(schema, read)), build)
    out: dict[str, Row] = {}
    for start in range(0, len(row_ids), ID_CHUNK):
        records = conn.execute(stmt, {"ids": list(row_ids[start:start + ID_CHUNK])}).all()
        out.update((r[0], _to_row(r[0], r[1], r[2:], read)) for r in records)
    return out


def check_where(schema: TableSchema, where: str, dialect: str) -> None:
    """Compile (and so validate) a ``where`` filter without running it.

    Raises:
        InvalidArgument: the filter does not parse or names unknown columns (field ``where``).
    """
    compile_where(where, schema, layout.row_table(schema), dialect)


async def storage_exists(db: Database, storage_id: str) -> bool:
    """Whether a table with this storage id exists (it was not deleted)."""
    async with db.read() as conn:
        found = await conn.scalar(sa.select(user_tables.c.storage_id).where(
            user_tables.c.storage_id == storage_id))
    return found is not None


async def knowledge_storage_ids(db: Database) -> set[str]:
    """Storage ids of every knowledge table."""
    async with db.read() as conn:
        return set(await conn.scalars(sa.select(user_tables.c.storage_id).where(
            user_tables.c.table_type == "knowledge")))


async def knowledge_schemas(db: Database) -> list[TableSchema]:
    """The current schema of every knowledge table."""
    async with db.read() as conn:
        rows = (await conn.execute(sa.select(user_tables).where(
            user_tables.c.table_type == "knowledge"))).all()
    return [schema_from_row(row) for row in rows]
