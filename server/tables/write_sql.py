"""Pre-rendered SQL for the two hot row writes: inserting rows and storing generated cells.

The generic SQLAlchemy path rebuilds a statement, derives its cache key, and sends every
parameter of every row through its column type (a ``json.dumps`` per state column) on each
execution: most of the Python cost of a row write. Here the SQL text is rendered once per
table and set of columns and executed with plain tuples through the driver's
``executemany`` (``conn.exec_driver_sql``). Callers pass values already typed by
:func:`~rowforge.server.tables.values.coerce` and cell states already JSON text
(:func:`~rowforge.server.tables.codec.state_text`), i.e. exactly what the column types
would have produced.

Only generated names are quoted (``ut_<hex>``, ``c_<n>``, ``s_<n>``): no user string ever
reaches the SQL text.
"""

from __future__ import annotations

import functools

from sqlalchemy.engine import Dialect

from rowforge.server.tables import layout
from rowforge.server.tables.model import ColumnSchema, TableSchema


def _placeholders(dialect: Dialect, count: int) -> list[str]:
    style = dialect.paramstyle
    if style == "qmark":
        return ["?"] * count
    if style == "numeric_dollar":
        return [f"${i}" for i in range(1, count + 1)]
    if style in {"format", "pyformat"}:
        return ["%s"] * count
    if style == "numeric":
        return [f":{i}" for i in range(1, count + 1)]
    raise ValueError(f"unsupported DBAPI paramstyle {style!r}")


class InsertSQL:
    """``INSERT`` of whole rows of one table.

    Parameters per row, in order: row id, updated_at (µs), then per column its value and its
    state (JSON text or None), in ``columns`` order.
    """

    __slots__ = ("columns", "index", "sql")

    def __init__(self, storage_id: str, columns: tuple[ColumnSchema, ...],
                 dialect: Dialect) -> None:
        quote = dialect.identifier_preparer.quote
        names = [layout.ROW_ID, layout.UPDATED_AT]
        for col in columns:
            names += [layout.value_name(col), layout.state_name(col)]
        #: The columns, in parameter order.
        self.columns = columns
        #: Column id -> position in ``columns``.
        self.index = {col.id: i for i, col in enumerate(columns)}
        self.sql = (f"INSERT INTO {quote(storage_id)} ({', '.join(map(quote, names))}) "
                    f"VALUES ({', '.join(_placeholders(dialect, len(names)))})")


def insert_sql(schema: TableSchema, dialect: Dialect) -> InsertSQL:
    """The (cached) insert of ``schema``'s rows."""
    names = tuple(c.storage_name for c in schema.columns)
    return _insert_sql(schema.storage_id, names, schema.columns, dialect)


@functools.lru_cache(maxsize=512)
def _insert_sql(storage_id: str, _names: tuple[str, ...], columns: tuple[ColumnSchema, ...],
                dialect: Dialect) -> InsertSQL:
    # Storage names are part of the key because ColumnSchema equality ignores them.
    return InsertSQL(storage_id, columns, dialect)


def update_cells_sql(storage_id: str, targets: tuple[tuple[str, str], ...],
                     dialect: Dialect) -> str:
    """``UPDATE`` of some cells of one row, by row id; ``targets`` are (value, state) SQL
    column names.

    Parameters, in order: updated_at (µs), then per target its value and its state, then the
    row id.
    """
    return _update_cells_sql(storage_id, targets, dialect)


@functools.lru_cache(maxsize=1024)
def _update_cells_sql(storage_id: str, targets: tuple[tuple[str, str], ...],
                      dialect: Dialect) -> str:
    quote = dialect.identifier_preparer.quote
    names = [layout.UPDATED_AT]
    for value_name, state_name in targets:
        names += [value_name, state_name]
    marks = _placeholders(dialect, len(names) + 1)
    sets = ", ".join(f"{quote(n)} = {m}" for n, m in zip(names, marks, strict=False))
    return f"UPDATE {quote(storage_id)} SET {sets} WHERE {quote(layout.ROW_ID)} = {marks[-1]}"
