"""Rows of user tables: insert, read (list/get/history/export), update, delete, search.

Reads take the caller's schema (from :meth:`SchemaStore.get_table`); writes check inside their
transaction that the columns they touch still exist (a concurrent DROP COLUMN makes them fail
with ABORTED, never half-written). Generated cells are persisted through the group-committing
:class:`~rowforge.server.tables.cell_writer.CellWriter`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from rowforge.server.errors import (
    Aborted,
    FieldViolation,
    InvalidArgument,
    NotFound,
    RowforgeError,
    Violations,
)
from rowforge.server.storage.db import Database
from rowforge.server.tables import fulltext, layout, page_tokens, write_sql
from rowforge.server.tables.cell_writer import CellWriter
from rowforge.server.tables.codec import cell_from_stored, state_text, state_to_json
from rowforge.server.tables.ids import uuid7
from rowforge.server.tables.model import (
    EMBEDDING_DTYPE,
    FILE_DTYPES,
    ID_COLUMN,
    KT_FILE_ID,
    RESERVED_COLUMNS,
    UPDATED_AT_COLUMN,
    Cell,
    CellStatus,
    ColumnSchema,
    EmbedGenConfig,
    Row,
    TableSchema,
)
from rowforge.server.tables.schema_store import SchemaStore, check_page, table_not_found
from rowforge.server.tables.values import ValueTypeError, check_vector, coerce, from_stored
from rowforge.server.tables.where import compile_where

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
MAX_VIOLATIONS = 50
MAX_DELETE_IDS = 1000
#: Error of the cells a stopped server left unfinished.
INTERRUPTED_MESSAGE = "interrupted: the server stopped before this cell finished"
_URI_SCHEME = ("file://", "s3://", "gs://", "http://", "https://")


def micros_to_datetime(us: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(microseconds=us)


@dataclass
class RowQuery:
    """Parameters of :meth:`RowStore.list_rows` (see ListRowsRequest)."""

    offset: int = 0
    limit: int = 0
    page_token: str = ""
    where: str = ""
    columns: Sequence[str] | None = None
    search_query: str = ""
    search_columns: Sequence[str] | None = None
    #: Column id to order by; "" or "ID" is insertion order.
    order_by: str = ""
    descending: bool = False


@dataclass
class RowPage:
    items: list[Row]
    total: int
    next_page_token: str = ""


@dataclass
class _Order:
    """The sort key of a listing: a column (None: insertion order) and its kind."""

    expr: sa.ColumnElement[Any] | None
    kind: str = "seq"
    nulls: bool = field(default=False)


def select_columns(schema: TableSchema, names: Sequence[str] | None,
                   field_name: str = "columns") -> list[ColumnSchema]:
    """The columns to return: all non-embedding columns by default, else those named (ID and
    Updated at are always returned and may be named)."""
    if not names:
        return [c for c in schema.columns if c.dtype != EMBEDDING_DTYPE]
    v = Violations()
    wanted: list[ColumnSchema] = []
    for i, name in enumerate(names):
        if name in RESERVED_COLUMNS:
            continue
        col = schema.column(name)
        if col is None:
            v.add(f"{field_name}[{i}]", _unknown(schema, name))
        elif col not in wanted:
            wanted.append(col)
    v.raise_if_any()
    return [c for c in schema.columns if c in wanted]  # table order


def _unknown(schema: TableSchema, name: str) -> str:
    valid = ", ".join(repr(c) for c in schema.column_ids)
    return f"unknown column {name!r} (columns: {valid})"


def _select(table: sa.Table, cols: list[ColumnSchema]) -> list[sa.ColumnElement[Any]]:
    out: list[sa.ColumnElement[Any]] = [table.c[layout.SEQ], table.c[layout.ROW_ID],
                                        table.c[layout.UPDATED_AT]]
    for col in cols:
        out += [table.c[layout.value_name(col)], table.c[layout.state_name(col)]]
    return out


def _to_row(record: Sequence[Any], cols: list[ColumnSchema]) -> Row:
    cells = {}
    for i, col in enumerate(cols):
        value = record[3 + 2 * i]
        if value is not None and (col.dtype == EMBEDDING_DTYPE or col.dtype == "bool"):
            value = from_stored(col.dtype, value)
        cells[col.id] = cell_from_stored(value, record[4 + 2 * i])
    return Row(id=record[1], update_time=micros_to_datetime(record[2]), cells=cells)


class RowStore:
    """Row storage of all user tables. Use through :class:`~.store.TableStore`."""

    def __init__(self, db: Database, schemas: SchemaStore, *, files: Any = None,
                 owner: str = "") -> None:
        self.db = db
        self.schemas = schemas
        #: The file store, for checking file URIs (None: only their scheme is checked).
        self.files = files
        #: This replica's id, named in the PENDING/RUNNING cells it writes.
        self.owner = owner
        self.writer = CellWriter(db, self._current, on_write=self._touched, owner=owner)
        # Row counts of recent filters, SQLite only (this process is the only writer there,
        # so a per-table write counter bumped around every write tells when a count is
        # stale; PostgreSQL replicas write behind each other's backs).
        self._counts: dict[tuple[Any, ...], tuple[int, int]] | None = (
            {} if db.is_sqlite else None)
        self._writes: dict[str, int] = {}
        #: Set False to measure uncached counts (benchmarks).
        self.count_cache = True
        #: Called with the storage ids of tables written by this process, before and after
        #: each write transaction (so also after its commit); must not block. The knowledge
        #: indexes use it to catch up with fresh rows at once.
        self.change_listeners: list[Callable[[Iterable[str]], None]] = []

    def _touched(self, storage_ids: Any) -> None:
        for storage_id in storage_ids:
            self._writes[storage_id] = self._writes.get(storage_id, 0) + 1
        for listener in self.change_listeners:
            listener(storage_ids)

    @contextlib.asynccontextmanager
    async def _writing(self, schema: TableSchema) -> AsyncIterator[AsyncConnection]:
        """A write transaction on a table's rows (invalidates its cached counts)."""
        self._touched([schema.storage_id])
        try:
            async with self.db.write() as conn:
                yield conn
        finally:
            self._touched([schema.storage_id])

    async def row_keys(self, schema: TableSchema, *, where: str = "", after: int = 0,
                       upto: int | None = None, limit: int = 1000) -> list[tuple[int, str]]:
        """``(sequence, id)`` of the rows matching ``where`` with ``after < sequence <=
        upto``, in insertion order: one keyset page (continue after the last sequence)."""
        conditions = self._filters(schema, where, "", None)
        table = layout.row_table(schema)
        seq = table.c[layout.SEQ]
        if upto is not None:
            conditions.append(seq <= upto)
        stmt = (sa.select(seq, table.c[layout.ROW_ID]).where(*conditions, seq > after)
                .order_by(seq).limit(limit))
        async with self._reading(schema) as conn:
            return [(int(s), str(i)) for s, i in (await conn.execute(stmt)).all()]

    async def last_sequence(self, schema: TableSchema) -> int:
        """The sequence of the newest row (0: none); rows inserted later have larger ones."""
        table = layout.row_table(schema)
        async with self._reading(schema) as conn:
            return int(await conn.scalar(sa.select(sa.func.max(table.c[layout.SEQ]))) or 0)

    async def _current(self, conn: AsyncConnection, storage_id: str) -> TableSchema | None:
        return await self.schemas.current(conn, storage_id)

    @contextlib.asynccontextmanager
    async def _reading(self, schema: TableSchema) -> AsyncIterator[AsyncConnection]:
        """A read connection; SQL errors caused by a concurrent schema change become
        NOT_FOUND (table deleted) or ABORTED (columns changed: retry)."""
        async with self.db.read() as conn:
            try:
                yield conn
            except sa.exc.DBAPIError:
                await conn.rollback()
                current = await self.schemas.load_by_storage(conn, schema.storage_id)
                if current is None:
                    raise table_not_found(schema.table_type, schema.id) from None
                if current.version != schema.version:
                    raise Aborted(f"table {schema.id!r} changed while it was read; retry",
                                  reason="TABLE_CHANGED") from None
                raise

    async def _check_live(self, conn: AsyncConnection, schema: TableSchema,
                          names: set[str]) -> TableSchema:
        current = await self._current(conn, schema.storage_id)
        if current is None:
            raise table_not_found(schema.table_type, schema.id)
        live = {c.storage_name for c in current.columns}
        if not names <= live:
            raise Aborted(f"columns of table {schema.id!r} changed meanwhile; retry",
                          reason="TABLE_CHANGED")
        return current

    # -- value checks ----------------------------------------------------------------------

    def _file_store(self) -> Any:
        return self.files

    async def _check_files(self, schema: TableSchema, checks: list[tuple[str, str, str]]) -> None:
        """Validate file URIs: (field, uri, dtype) triples."""
        if not checks:
            return
        files = self._file_store()
        v = Violations()
        for field_name, uri, dtype in checks:
            if files is None:
                if not uri.startswith(_URI_SCHEME):
                    v.add(field_name, f"expected a FileService URI (file://...), got {uri[:60]!r}")
                continue
            try:
                await files.validate_uri(schema.project_id, uri, dtype)
            except RowforgeError as exc:
                if exc.code not in {"INVALID_ARGUMENT", "NOT_FOUND", "PERMISSION_DENIED"}:
                    raise
                v.add(field_name, exc.message)
        v.raise_if_any()

    def _input_values(self, schema: TableSchema, columns: Mapping[str, ColumnSchema],
                      values: Mapping[str, Any], field_name: str, v: Violations,
                      files: list[tuple[str, str, str]]) -> dict[str, Any]:
        """``values`` typed for their columns (``columns``: id -> column), by column id;
        problems go to ``v``, file URIs to check to ``files``. A vector must have its
        column's recorded length (any column may be given, generated ones included)."""
        out: dict[str, Any] = {}
        if not isinstance(values, Mapping):
            v.add(field_name, "must be an object of column id to value")
            return out
        for name, value in values.items():
            col = columns.get(name)
            if col is None:
                where = f"{field_name}.{name}"
                if name in RESERVED_COLUMNS or name.casefold() in {"id", "updated at"}:
                    v.add(where, f"{name!r} is set by the server")
                else:
                    v.add(where, _unknown(schema, name))
                continue
            try:
                typed = out[name] = coerce(col.dtype, value)
                if typed is not None and isinstance(col.gen_config, EmbedGenConfig):
                    check_vector(typed, col.gen_config.dimension)
            except ValueTypeError as exc:
                v.add(f"{field_name}.{name}", f"column {name!r} ({col.dtype}): {exc}")
                continue
            if typed is not None and col.dtype in FILE_DTYPES:
                files.append((f"{field_name}.{name}", typed, col.dtype))
        return out

    # -- inserts ---------------------------------------------------------------------------

    async def insert_rows(self, schema: TableSchema, rows: Sequence[Mapping[str, Any]], *,
                          generated_status: CellStatus = CellStatus.PENDING,
                          field_name: str = "data") -> list[Row]:
        """Validate, type and insert rows in one transaction; see TableStore.insert_rows."""
        plan = write_sql.insert_sql(schema, self.db.engine.dialect)
        columns = {c.id: c for c in plan.columns}
        v = Violations()
        files: list[tuple[str, str, str]] = []
        typed = []
        for i, values in enumerate(rows):
            typed.append(self._input_values(schema, columns, values, f"{field_name}[{i}]", v,
                                            files))
            if len(v.items) >= MAX_VIOLATIONS:
                break
        v.raise_if_any()
        await self._check_files(schema, files)
        if not typed:
            return []
        now = layout.now_micros()
        update_time = micros_to_datetime(now)
        # Per column, the status and stored state of a cell the row does not give: generated
        # ones start as ``generated_status``, input ones are NULL (DONE, no state).
        absent = [(generated_status, state_text(Cell(value=None, status=generated_status),
                                                 self.owner))
                  if c.gen_config is not None else (CellStatus.DONE, None)
                  for c in plan.columns]
        params: list[tuple[Any, ...]] = []
        out: list[Row] = []
        for given in typed:
            row_id = uuid7()
            record: list[Any] = [row_id, now]
            cells: dict[str, Cell] = {}
            for col, (status, state) in zip(plan.columns, absent, strict=True):
                name = col.id
                if name in given:
                    value = given[name]
                    record += (value, None)  # given, even for a generated column: DONE
                    if value is not None and col.dtype == EMBEDDING_DTYPE:
                        value = from_stored(EMBEDDING_DTYPE, value)
                    cells[name] = Cell(value=value)
                else:
                    record += (None, state)
                    cells[name] = Cell(value=None, status=status)
            params.append(tuple(record))
            out.append(Row(id=row_id, update_time=update_time, cells=cells))
        async with self._writing(schema) as conn:
            await self._check_live(conn, schema, {c.storage_name for c in schema.columns})
            await conn.exec_driver_sql(plan.sql, params)
        return out

    def write_cells(self, schema: TableSchema, row_id: str,
                    cells: Mapping[str, Cell]) -> Coroutine[Any, Any, None]:
        return self.writer.write(schema, row_id, cells)

    # -- reads -----------------------------------------------------------------------------

    async def get_rows(self, schema: TableSchema, row_ids: Sequence[str], *,
                       columns: Sequence[str] | None = None) -> list[Row]:
        cols = select_columns(schema, columns)
        if not row_ids:
            return []
        table = layout.row_table(schema)
        query = sa.select(*_select(table, cols)).where(
            table.c[layout.ROW_ID].in_(sorted(set(row_ids))))
        async with self._reading(schema) as conn:
            found = {r[1]: _to_row(r, cols) for r in await conn.execute(query)}
        for row_id in row_ids:
            if row_id not in found:
                raise row_not_found(schema, row_id)
        return [found[r] for r in row_ids]

    async def history(self, schema: TableSchema, *, before_row_id: str | None,
                      columns: Sequence[str], limit: int = 1000) -> list[Row]:
        cols = select_columns(schema, list(columns)) if columns else []
        table = layout.row_table(schema)
        seq = table.c[layout.SEQ]
        query = sa.select(*_select(table, cols)).order_by(seq.desc()).limit(limit)
        if before_row_id is not None:
            before = (sa.select(seq).where(table.c[layout.ROW_ID] == before_row_id)
                      .scalar_subquery())
            query = query.where(seq < before)
        async with self._reading(schema) as conn:
            rows = [_to_row(r, cols) for r in await conn.execute(query)]
        rows.reverse()
        return rows

    async def vector_length(self, schema: TableSchema, column_id: str) -> int | None:
        """The number count of one stored vector of an embedding column (None: none
        stored)."""
        col = schema.column(column_id)
        if col is None or col.dtype != EMBEDDING_DTYPE:
            raise ValueError(f"not an embedding column: {column_id!r}")
        value = layout.row_table(schema).c[layout.value_name(col)]
        async with self._reading(schema) as conn:
            stored = await conn.scalar(sa.select(value).where(value.is_not(None)).limit(1))
        return None if stored is None else len(stored) // 4

    async def count_rows(self, schema: TableSchema) -> int:
        async with self._reading(schema) as conn:
            return await self.schemas.count_rows(conn, schema)

    def _filters(self, schema: TableSchema, where: str, search_query: str,
                 search_columns: Sequence[str] | None) -> list[sa.ColumnElement[bool]]:
        table = layout.row_table(schema)
        dialect = self.db.dialect
        conditions: list[sa.ColumnElement[bool]] = []
        if where.strip():
            conditions.append(compile_where(where, schema, table, dialect))
        if search_query.strip():
            cols = None
            if search_columns:
                v = Violations()
                cols = []
                for i, name in enumerate(search_columns):
                    col = schema.column(name)
                    if col is None:
                        v.add(f"search_columns[{i}]", _unknown(schema, name))
                    elif col.dtype != "str":
                        v.add(f"search_columns[{i}]",
                              f"column {name!r} ({col.dtype}) is not a text column")
                    else:
                        cols.append(col)
                v.raise_if_any()
            elif not fulltext.text_columns(schema):
                raise InvalidArgument.field("search_query", "the table has no str columns to "
                                                            "search")
            conditions.append(fulltext.match_filter(schema, search_query, cols, dialect))
        return conditions

    def _order(self, schema: TableSchema, order_by: str) -> _Order:
        table = layout.row_table(schema)
        if order_by in {"", ID_COLUMN}:
            return _Order(None)
        if order_by == UPDATED_AT_COLUMN:
            return _Order(table.c[layout.UPDATED_AT], "int")
        col = schema.column(order_by)
        if col is None:
            raise InvalidArgument.field("order_by", _unknown(schema, order_by))
        if col.dtype == EMBEDDING_DTYPE:
            raise InvalidArgument.field("order_by", f"column {order_by!r} cannot be ordered by")
        expr: sa.ColumnElement[Any] = table.c[layout.value_name(col)]
        kind = {"int": "int", "float": "float", "bool": "bool"}.get(col.dtype, "text")
        if kind == "text" and self.db.is_postgres:
            expr = expr.collate("C")  # SQLite's binary order, on both databases
        return _Order(expr, kind, nulls=True)

    async def list_rows(self, schema: TableSchema, query: RowQuery) -> RowPage:
        """One page of rows (see ListRowsRequest): filter, search, order, keyset paging."""
        size = check_page(query.offset, query.limit)
        cols = select_columns(schema, query.columns)
        conditions = self._filters(schema, query.where, query.search_query,
                                   query.search_columns)
        if query.search_query.strip():
            await self.schemas.fulltext.ensure(schema, self._current)
        order = self._order(schema, query.order_by)
        table = layout.row_table(schema)
        seq = table.c[layout.SEQ]
        bound = page_tokens.params_hash(
            "rows", schema.storage_id, query.where, query.search_query,
            list(query.search_columns or ()), query.order_by, query.descending)
        page_conds = list(conditions)
        if query.page_token:
            cursor = page_tokens.decode(query.page_token, bound)
            page_conds.append(_after(order, seq, cursor, query.descending))
        desc = query.descending
        if order.expr is None:
            order_by = [seq.desc() if desc else seq.asc()]
            sort_cols: list[sa.ColumnElement[Any]] = []
        else:
            is_null = order.expr.is_(None)
            order_by = ([is_null.desc(), order.expr.desc(), seq.desc()] if desc
                        else [is_null.asc(), order.expr.asc(), seq.asc()])
            sort_cols = [order.expr.label("_sort")]
        stmt = (sa.select(*_select(table, cols), *sort_cols).where(*page_conds)
                .order_by(*order_by).limit(size + 1))
        if query.offset and not query.page_token:
            stmt = stmt.offset(query.offset)
        count = sa.select(sa.func.count()).select_from(table).where(*conditions)

        async def page() -> tuple[list[Any], list[Row]]:
            async with self._reading(schema) as conn:
                records = list((await conn.execute(stmt)).all())
            return records, [_to_row(r, cols) for r in records[:size]]

        # Two connections: the count (the costly part: it visits every match) runs while the
        # page is read and converted.
        (records, items), total = await asyncio.gather(
            page(), self._count(schema, count, (query.where, query.search_query,
                                                tuple(query.search_columns or ()))))
        token = ""
        if len(records) > size:
            last = records[size - 1]
            if order.expr is None:
                cursor = [last[0]]
            else:
                value = last[-1]
                cursor = [value is None, value, last[0]]
            token = page_tokens.encode(cursor, bound)
        return RowPage(items=items, total=total, next_page_token=token)

    async def _count(self, schema: TableSchema, count: sa.Select[Any],
                     key_parts: tuple[Any, ...]) -> int:
        """The number of matching rows, from the cache while the table is unchanged."""
        key = (schema.storage_id, schema.version, *key_parts)
        writes = self._writes.get(schema.storage_id, 0)
        if self._counts is not None:
            cached = self._counts.get(key)
            if cached is not None and cached[0] == writes:
                return cached[1]
        async with self._reading(schema) as conn:
            total = int(await conn.scalar(count) or 0)
        if self._counts is not None and self.count_cache:
            if len(self._counts) >= 1024:
                self._counts.pop(next(iter(self._counts)))
            self._counts[key] = (writes, total)
        return total

    async def iter_rows(self, schema: TableSchema, *, columns: Sequence[str] | None = None,
                        where: str = "", batch: int = 500) -> AsyncIterator[list[Row]]:
        """All rows matching ``where`` in insertion order, in batches (one read each)."""
        cols = select_columns(schema, columns)
        conditions = self._filters(schema, where, "", None)
        table = layout.row_table(schema)
        seq = table.c[layout.SEQ]
        last = 0
        while True:
            stmt = (sa.select(*_select(table, cols)).where(*conditions, seq > last)
                    .order_by(seq).limit(batch))
            async with self._reading(schema) as conn:
                records = (await conn.execute(stmt)).all()
            if not records:
                return
            yield [_to_row(r, cols) for r in records]
            if len(records) < batch:
                return
            last = records[-1][0]

    async def fulltext_search(self, schema: TableSchema, query: str, *,
                              columns: Sequence[str] | None = None, limit: int,
                              where: str | None = None,
                              any_word: bool = False) -> list[tuple[str, float]]:
        """Row ids matching every word of ``query`` (``any_word``: at least one), best first,
        with their scores."""
        if limit < 1:
            raise InvalidArgument.field("limit", "must be at least 1")
        conditions = self._filters(schema, where or "", "", None)
        cols = None
        if columns:
            cols = [c for c in (schema.column(n) for n in columns) if c is not None]
            bad = [n for n in columns if (c := schema.column(n)) is None or c.dtype != "str"]
            if bad:
                raise InvalidArgument.field("columns", f"not str columns: {bad}")
        stmt = fulltext.ranked_select(schema, query, cols, self.db.dialect, any_word=any_word)
        if stmt is None:
            return []
        await self.schemas.fulltext.ensure(schema, self._current)
        stmt = stmt.where(*conditions).limit(limit)
        async with self._reading(schema) as conn:
            return [(r[0], float(r[1])) for r in await conn.execute(stmt)]

    # -- updates and deletes ---------------------------------------------------------------

    async def update_rows(self, schema: TableSchema, updates: Mapping[str, Mapping[str, Any]],
                          *, field_name: str = "data") -> int:
        """Set input (or generated) cells of existing rows; nothing is regenerated.

        Raises:
            InvalidArgument: unknown columns, wrong types (nothing written).
            NotFound: a row id does not exist (nothing written).
        """
        v = Violations()
        files: list[tuple[str, str, str]] = []
        columns = {c.id: c for c in schema.columns}
        typed: dict[str, dict[str, Any]] = {}
        for row_id, values in updates.items():
            where = f"{field_name}[{row_id}]"
            if not values:
                v.add(where, "set at least one column")
                continue
            typed[row_id] = self._input_values(schema, columns, values, where, v, files)
        v.raise_if_any()
        await self._check_files(schema, files)
        if not typed:
            return 0
        table = layout.row_table(schema)
        now = layout.now_micros()
        groups: dict[tuple[ColumnSchema, ...], list[dict[str, Any]]] = {}
        for row_id, given in typed.items():
            key = tuple(c for c in schema.columns if c.id in given)
            params = {"_row_id": row_id, "_now": now}
            for col in key:
                params["v_" + col.storage_name] = given[col.id]
            groups.setdefault(key, []).append(params)
        touched = {c.storage_name for key in groups for c in key}
        async with self._writing(schema) as conn:
            await self._check_live(conn, schema, touched)
            existing = set(await conn.scalars(sa.select(table.c[layout.ROW_ID]).where(
                table.c[layout.ROW_ID].in_(list(typed)))))
            for row_id in typed:
                if row_id not in existing:
                    raise row_not_found(schema, row_id)
            for key, rows in groups.items():
                assigned: dict[str, Any] = {layout.UPDATED_AT: sa.bindparam("_now")}
                for col in key:
                    assigned[layout.value_name(col)] = sa.bindparam("v_" + col.storage_name)
                    assigned[layout.state_name(col)] = None  # set by hand: DONE, no error
                stmt = (table.update().where(table.c[layout.ROW_ID] == sa.bindparam("_row_id"))
                        .values(assigned))
                await conn.execute(stmt, rows)
        return len(typed)

    async def delete_rows(self, schema: TableSchema, row_ids: Sequence[str] = (),
                          where: str = "") -> int:
        """Delete rows by id and/or filter (their union); unknown ids are ignored."""
        v = Violations()
        v.check(bool(row_ids) or bool(where.strip()), "row_ids",
                "give row ids, a where filter, or both")
        v.check(len(row_ids) <= MAX_DELETE_IDS, "row_ids",
                f"at most {MAX_DELETE_IDS} ids per call")
        v.raise_if_any()
        table = layout.row_table(schema)
        conditions: list[sa.ColumnElement[bool]] = []
        if row_ids:
            conditions.append(table.c[layout.ROW_ID].in_(list(set(row_ids))))
        if where.strip():
            conditions.append(compile_where(where, schema, table, self.db.dialect))
        async with self._writing(schema) as conn:
            await self._check_live(conn, schema, set())
            result = await conn.execute(table.delete().where(sa.or_(*conditions)))
        return int(result.rowcount or 0)

    async def finish_interrupted_cells(self, *, updated_before_us: int | None = None,
                                       owner: str | None = None) -> int:
        """Mark every PENDING or RUNNING cell ERROR (:data:`INTERRUPTED_MESSAGE`); with
        ``updated_before_us``, only in rows last updated before then (µs since the epoch);
        with ``owner``, only the cells that replica was generating.

        For a server starting on a database nobody else writes, or for the cells of a dead
        replica: they were being generated by a process that stopped before finishing them.
        Returns how many cells were marked.
        """
        async with self.db.read() as conn:
            schemas = await self.schemas.all_tables(conn)
        error = state_to_json(Cell(value=None, status=CellStatus.ERROR,
                                   error=INTERRUPTED_MESSAGE))
        changed = 0
        for schema in schemas:
            table = layout.row_table(schema)
            states = [table.c[layout.state_name(c)] for c in schema.columns]
            if not states:
                continue
            # One read per table finds the (usually no) tables to fix.
            async with self._reading(schema) as conn:
                found = await conn.scalar(sa.select(sa.literal(1)).select_from(table).where(
                    *_unfinished(table, states, updated_before_us, owner)).limit(1))
            if found is None:
                continue
            async with self._writing(schema) as conn:
                if await self._current(conn, schema.storage_id) is None:
                    continue  # deleted meanwhile
                now = layout.now_micros()
                for state in states:
                    result = await conn.execute(table.update().where(
                        *_unfinished(table, [state], updated_before_us, owner)).values(
                        {state: error, layout.UPDATED_AT: now}))
                    changed += int(result.rowcount or 0)
        return changed

    async def file_references(self, project_id: str, uri: str) -> list[str]:
        """Ids of the project's tables holding ``uri`` in a file column (or knowledge File
        ID); for FileService's DeleteFile."""
        found: list[str] = []
        async with self.db.read() as conn:
            for schema in await self.schemas.project_tables(conn, project_id):
                cols = [c for c in schema.columns if c.dtype in FILE_DTYPES
                        or (schema.table_type == "knowledge" and c.id == KT_FILE_ID)]
                if not cols:
                    continue
                table = layout.row_table(schema)
                hit = await conn.scalar(sa.select(sa.literal(1)).select_from(table).where(
                    sa.or_(*[table.c[layout.value_name(c)] == uri for c in cols])).limit(1))
                if hit is not None and schema.id not in found:
                    found.append(schema.id)
        return found


def row_not_found(schema: TableSchema, row_id: str) -> NotFound:
    return NotFound(f"row {row_id!r} not found in {schema.table_type} table {schema.id!r}",
                    reason="ROW_NOT_FOUND", metadata={"rowId": row_id, "tableId": schema.id},
                    field_violations=[FieldViolation("row_id", f"unknown row {row_id!r}")],
                    resource_type="row", resource_name=row_id)


def _unfinished(table: sa.Table, states: Sequence[sa.ColumnElement[Any]],
                updated_before_us: int | None, owner: str | None = None
                ) -> list[sa.ColumnElement[bool]]:
    """WHERE: a cell among ``states`` is PENDING or RUNNING (in a row last updated before
    ``updated_before_us``, when given; generated by the replica ``owner``, when given)."""
    statuses = [CellStatus.PENDING.value, CellStatus.RUNNING.value]
    if owner is not None:
        where = [sa.or_(*[sa.and_(state["st"].as_string().in_(statuses),
                                  state["o"].as_string() == owner) for state in states])]
    else:
        where = [sa.or_(*[state["st"].as_string().in_(statuses) for state in states])]
    if updated_before_us is not None:
        where.append(table.c[layout.UPDATED_AT] < updated_before_us)
    return where


def _after(order: _Order, seq: sa.ColumnElement[Any], cursor: list[Any],
           desc: bool) -> sa.ColumnElement[bool]:
    """The keyset condition "after the cursor" for the listing's order (NULLs sort last
    ascending and first descending, on both databases)."""
    bad = InvalidArgument.field("page_token", "is not a valid page token",
                                reason="INVALID_PAGE_TOKEN")
    if order.expr is None:
        if len(cursor) != 1 or not _is_int(cursor[0]):
            raise bad
        return seq < cursor[0] if desc else seq > cursor[0]
    if len(cursor) != 3 or not isinstance(cursor[0], bool) or not _is_int(cursor[2]):
        raise bad
    is_null, value, rid = cursor
    if not is_null and not _fits(order.kind, value):
        raise bad
    col = order.expr
    value = sa.bindparam(None, value, type_=col.type)
    if desc:
        if is_null:
            return sa.or_(sa.and_(col.is_(None), seq < rid), col.is_not(None))
        return sa.and_(col.is_not(None), sa.or_(col < value, sa.and_(col == value, seq < rid)))
    if is_null:
        return sa.and_(col.is_(None), seq > rid)
    return sa.or_(col.is_(None), col > value, sa.and_(col == value, seq > rid))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _fits(kind: str, value: Any) -> bool:
    if kind == "int":
        return _is_int(value)
    if kind == "float":
        return _is_int(value) or isinstance(value, float)
    if kind == "bool":
        return isinstance(value, bool)
    return isinstance(value, str)
