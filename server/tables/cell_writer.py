"""Group commit for generated cells.

The engine persists every cell as it completes; one transaction per cell would cap a busy
table at the database's commit rate (one fsync each on SQLite, serialised by its single
writer). :class:`CellWriter` queues the writes and a single flusher commits everything queued
so far in one transaction, then the next batch, so concurrent ``write_cells`` calls share
commits; each call returns once its own data is committed.

A cell whose row or column was deleted meanwhile is dropped without error (the row is gone;
storage names are stable across renames, so a renamed column still receives its value).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from rowforge.server.errors import Unavailable
from rowforge.server.storage.db import Database
from rowforge.server.tables import layout
from rowforge.server.tables.codec import state_to_json
from rowforge.server.tables.model import Cell, CellStatus, TableSchema
from rowforge.server.tables.values import ValueTypeError, coerce

log = logging.getLogger("rowforge.tables")

#: Loads the current schema of a storage id inside the flush transaction (None: deleted).
SchemaLoader = Callable[[AsyncConnection, str], Any]


class _Pending:
    __slots__ = ("cells", "future", "row_id", "schema")

    def __init__(self, schema: TableSchema, row_id: str, cells: Mapping[str, Cell],
                 future: asyncio.Future[None]) -> None:
        self.schema = schema
        self.row_id = row_id
        self.cells = dict(cells)
        self.future = future


class CellWriter:
    """Batches cell writes into shared transactions (see the module docstring)."""

    def __init__(self, db: Database, load_current: SchemaLoader, *, max_batch: int = 2000,
                 on_write: Callable[[Iterable[str]], None] | None = None) -> None:
        self.db = db
        self.load_current = load_current
        #: Called with the storage ids written, before and after each flush.
        self.on_write = on_write or (lambda _ids: None)
        self.max_batch = max_batch
        self._queue: list[_Pending] = []
        self._flusher: asyncio.Task[None] | None = None
        #: Flushes and cells written (for benchmarks and tests).
        self.flushes = 0
        self.cells_written = 0

    async def write(self, schema: TableSchema, row_id: str, cells: Mapping[str, Cell]) -> None:
        """Queue ``cells`` of one row and wait until they are committed."""
        if not cells:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(schema, row_id, cells, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._run(), name="rowforge-cell-writer")
        # Shielded: a cancelled caller (client gone) still gets its queued cells written, and
        # the flusher never sees the cancellation.
        await asyncio.shield(future)

    async def close(self) -> None:
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)

    async def _run(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[:self.max_batch], self._queue[self.max_batch:]
            try:
                await self._flush(batch)
            except asyncio.CancelledError:  # shutting down: fail the waiters, then stop
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(Unavailable(
                            "the server is stopping; cells were not stored",
                            reason="STORAGE_UNAVAILABLE", retry_after=1.0))
                raise
            except Exception as exc:
                log.warning("cell write failed: %s", exc)
                error: BaseException = exc
                if not hasattr(exc, "code"):  # not a domain error: a database failure
                    error = Unavailable("could not store generated cells; retry",
                                        reason="STORAGE_UNAVAILABLE", retry_after=1.0)
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(error)
            else:
                for item in batch:
                    if not item.future.done():
                        item.future.set_result(None)

    async def _flush(self, batch: list[_Pending]) -> None:
        # Merge per row in arrival order: a later write of a cell wins over an earlier one
        # (RUNNING then DONE), whatever statement group each lands in.
        merged: dict[tuple[str, str], dict[str, Any]] = {}
        schemas: dict[str, TableSchema] = {}
        for item in batch:
            schemas.setdefault(item.schema.storage_id, item.schema)
            values = merged.setdefault((item.schema.storage_id, item.row_id), {})
            for column_id, cell in item.cells.items():
                col = item.schema.column(column_id)
                if col is None:
                    continue
                values[col.storage_name] = (col.dtype, cell)
        now = layout.now_micros()
        self.on_write(schemas)
        try:
            await self._apply(merged, schemas, now)
        finally:
            self.on_write(schemas)
        self.flushes += 1

    async def _apply(self, merged: dict[tuple[str, str], dict[str, Any]],
                     schemas: dict[str, TableSchema], now: int) -> None:
        async with self.db.write() as conn:
            current: dict[str, TableSchema | None] = {}
            for storage_id in schemas:
                current[storage_id] = await self.load_current(conn, storage_id)
            groups: dict[tuple[str, tuple[str, ...]], list[dict[str, Any]]] = {}
            for (storage_id, row_id), values in merged.items():
                schema = current[storage_id]
                if schema is None:
                    continue  # table deleted meanwhile
                live = {c.storage_name for c in schema.columns}
                params: dict[str, Any] = {"_row_id": row_id, "_now": now}
                for name, (dtype, cell) in values.items():
                    if name not in live:
                        continue  # column dropped meanwhile
                    value, state = _stored(dtype, cell)
                    params["v_" + name] = value
                    params["s_" + name] = state
                names = tuple(sorted(k[2:] for k in params if k.startswith("v_")))
                if names:
                    groups.setdefault((storage_id, names), []).append(params)
            for (storage_id, names), rows in groups.items():
                schema = current[storage_id]
                assert schema is not None
                table = layout.row_table(schema)
                by_name = {c.storage_name: c for c in schema.columns}
                stmt = (table.update()
                        .where(table.c[layout.ROW_ID] == sa.bindparam("_row_id"))
                        .values({layout.UPDATED_AT: sa.bindparam("_now"),
                                 **{layout.value_name(by_name[n]): sa.bindparam("v_" + n)
                                    for n in names},
                                 **{layout.state_name(by_name[n]): sa.bindparam("s_" + n)
                                    for n in names}}))
                await conn.execute(stmt, rows)
                self.cells_written += sum(len(names) for _ in rows)


def _stored(dtype: str, cell: Cell) -> tuple[Any, Any]:
    """(value, state JSON) to store; a value that does not fit the dtype fails the cell."""
    try:
        value = coerce(dtype, cell.value)
    except ValueTypeError as exc:
        failed = Cell(value=None, status=CellStatus.ERROR,
                      error=f"the generated value does not fit dtype {dtype}: {exc}",
                      usage=cell.usage, references=cell.references)
        return None, state_to_json(failed)
    return value, state_to_json(cell)
