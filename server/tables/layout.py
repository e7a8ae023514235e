"""How a user table is laid out in SQL, and the DDL that creates and migrates it.

One SQL table per user table, named ``ut_<hex>`` from an internal id. Its columns:

* ``rid``: integer primary key, the insertion sequence (default order, keyset cursors).
* ``id``: the row id (a time-ordered UUIDv7 string), unique.
* ``updated_at``: microseconds since the epoch (BIGINT: cheap to compare and order on both
  databases).
* per user column ``c_<n>``: the typed value (TEXT, BIGINT, DOUBLE, BOOLEAN, BLOB for float32
  embedding vectors), and ``s_<n>``: the cell's generation state as JSON, NULL for a plain
  DONE cell (status, error, usage, references; see :mod:`.codec`). A state column per column
  (rather than one JSON state per row) lets the engine persist one finished cell with a single
  blind ``UPDATE`` (no read-modify-write), and a column switching between input and generated
  needs no migration.

SQL names are generated (``c_<n>`` with ``n`` from a per-table counter that never goes back),
never taken from user strings, so renames and reorders touch only metadata.

Indexes: ``id`` (unique), ``updated_at``, and one per filterable scalar column (int, float,
bool, file URIs, and *input* str columns) so that ``where`` filters and counts stay fast.
Generated str columns (long LLM outputs) and knowledge texts are not indexed: they are
searched through the full-text index instead. On PostgreSQL str columns get a hash index
(equality/IN), because a btree refuses entries above ~2.7 kB.
"""

from __future__ import annotations

import functools
import time
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from rowforge.server.tables.model import (
    EMBEDDING_DTYPE,
    FILE_DTYPES,
    KT_TEXT,
    ColumnSchema,
    TableSchema,
)

SEQ = "rid"
ROW_ID = "id"
UPDATED_AT = "updated_at"

_INT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def new_storage_id() -> str:
    return f"ut_{uuid.uuid4().hex[:20]}"


def now_micros() -> int:
    return time.time_ns() // 1000


def value_name(col: ColumnSchema) -> str:
    return col.storage_name


def state_name(col: ColumnSchema) -> str:
    return "s_" + col.storage_name[2:]


def sql_type(dtype: str) -> sa.types.TypeEngine[Any]:
    if dtype == "int":
        return sa.BigInteger()
    if dtype == "float":
        return sa.Double()
    if dtype == "bool":
        return sa.Boolean(create_constraint=False)
    if dtype == EMBEDDING_DTYPE:
        return sa.LargeBinary()
    return sa.Text()


def is_indexed(col: ColumnSchema) -> bool:
    if col.dtype in {"int", "float", "bool"} or col.dtype in FILE_DTYPES:
        return True
    return col.dtype == "str" and col.gen_config is None and not (col.system and col.id == KT_TEXT)


def _sql_columns(col: ColumnSchema) -> list[sa.Column[Any]]:
    return [sa.Column(value_name(col), sql_type(col.dtype), nullable=True),
            sa.Column(state_name(col), sa.JSON(none_as_null=True), nullable=True)]


def _make_table(storage_id: str, columns: tuple[tuple[str, str], ...]) -> sa.Table:
    md = sa.MetaData()
    cols: list[sa.Column[Any]] = [
        sa.Column(SEQ, _INT, primary_key=True, autoincrement=True),
        sa.Column(ROW_ID, sa.String(40), nullable=False),
        sa.Column(UPDATED_AT, sa.BigInteger(), nullable=False),
    ]
    for name, dtype in columns:
        cols.extend(_sql_columns(ColumnSchema(id=name, dtype=dtype, storage_name=name)))
    return sa.Table(storage_id, md, *cols, sqlite_autoincrement=True)


#: Query-side tables are cached per layout; DDL builds fresh ones (indexes attach to them).
_build = functools.lru_cache(maxsize=512)(_make_table)


def _layout_key(schema: TableSchema) -> tuple[tuple[str, str], ...]:
    return tuple((c.storage_name, c.dtype) for c in schema.columns)


def row_table(schema: TableSchema) -> sa.Table:
    """The SQLAlchemy table of a schema's rows (cached per layout)."""
    if not schema.storage_id:
        raise ValueError(f"table {schema.id!r} has no storage id (not from the store?)")
    return _build(schema.storage_id, _layout_key(schema))


def _index_name(schema: TableSchema, suffix: str) -> str:
    return f"ix_{schema.storage_id}_{suffix}"


def column_index(schema: TableSchema, table: sa.Table, col: ColumnSchema,
                 dialect: str) -> sa.Index | None:
    if not is_indexed(col):
        return None
    using = "hash" if dialect == "postgresql" and col.dtype == "str" else None
    kwargs: dict[str, Any] = {"postgresql_using": using} if using else {}
    return sa.Index(_index_name(schema, col.storage_name), table.c[value_name(col)], **kwargs)


async def create_row_table(conn: AsyncConnection, schema: TableSchema) -> None:
    """CREATE the SQL table of a new user table, with its indexes."""
    table = _make_table(schema.storage_id, _layout_key(schema))
    dialect = conn.dialect.name
    indexes = [
        sa.Index(_index_name(schema, "id"), table.c[ROW_ID], unique=True),
        sa.Index(_index_name(schema, "upd"), table.c[UPDATED_AT]),
    ]
    indexes += [ix for col in schema.columns
                if (ix := column_index(schema, table, col, dialect)) is not None]

    assert all(ix.table is table for ix in indexes)  # attached: CREATE TABLE makes them too
    await conn.run_sync(table.create)


def _quote(conn: AsyncConnection, name: str) -> str:
    return conn.dialect.identifier_preparer.quote(name)


async def add_column(conn: AsyncConnection, schema: TableSchema, col: ColumnSchema) -> None:
    """ALTER TABLE ADD the value and state columns of ``col`` (and its index)."""
    table = _quote(conn, schema.storage_id)
    for column in _sql_columns(col):
        type_sql = column.type.compile(dialect=conn.dialect)
        await conn.execute(sa.text(
            f"ALTER TABLE {table} ADD COLUMN {_quote(conn, column.name)} {type_sql}"))
    new_schema = TableSchema(project_id=schema.project_id, table_type=schema.table_type,
                             id=schema.id, columns=(*schema.columns, col),
                             storage_id=schema.storage_id)
    fresh = _make_table(new_schema.storage_id, _layout_key(new_schema))
    index = column_index(new_schema, fresh, col, conn.dialect.name)
    if index is not None:
        await conn.run_sync(index.create)


async def drop_column(conn: AsyncConnection, schema: TableSchema, col: ColumnSchema) -> None:
    """ALTER TABLE DROP the columns of ``col`` (SQLite >= 3.35 refuses indexed columns: the
    index goes first)."""
    if is_indexed(col):
        await conn.execute(sa.text(
            f"DROP INDEX IF EXISTS {_quote(conn, _index_name(schema, col.storage_name))}"))
    table = _quote(conn, schema.storage_id)
    for name in (value_name(col), state_name(col)):
        await conn.execute(sa.text(f"ALTER TABLE {table} DROP COLUMN {_quote(conn, name)}"))


async def drop_row_table(conn: AsyncConnection, schema: TableSchema) -> None:
    await conn.execute(sa.text(f"DROP TABLE IF EXISTS {_quote(conn, schema.storage_id)}"))


async def copy_rows(conn: AsyncConnection, src: TableSchema, dst: TableSchema) -> None:
    """INSERT INTO dst SELECT ... FROM src, keeping ids, order and states (same columns)."""
    s, d = row_table(src), row_table(dst)
    names = [SEQ, ROW_ID, UPDATED_AT]
    for b in dst.columns:
        names += [value_name(b), state_name(b)]
    src_cols = [s.c[SEQ], s.c[ROW_ID], s.c[UPDATED_AT]]
    for a in src.columns:
        src_cols += [s.c[value_name(a)], s.c[state_name(a)]]
    await conn.execute(d.insert().from_select(names, sa.select(*src_cols)))
    if conn.dialect.name == "postgresql":
        # Explicit rids do not advance the identity sequence of the copy.
        await conn.execute(sa.text(
            f"SELECT setval(pg_get_serial_sequence('{dst.storage_id}', '{SEQ}'), "
            f"COALESCE((SELECT max({SEQ}) FROM {_quote(conn, dst.storage_id)}), 0) + 1, false)"))
