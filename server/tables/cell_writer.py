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

from sqlalchemy.ext.asyncio import AsyncConnection

from rowforge.server.errors import Unavailable
from rowforge.server.storage.db import Database
from rowforge.server.tables import layout, write_sql
from rowforge.server.tables.codec import state_text
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
                 on_write: Callable[[Iterable[str]], None] | None = None,
                 owner: str = "") -> None:
        self.db = db
        #: Named in the PENDING/RUNNING states written (this replica's id).
        self.owner = owner
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
        # A cancelled caller (client gone) cancels only its future: its cells stay queued and
        # are written; the flusher skips futures already done.
        await future

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
        # (RUNNING then DONE), whatever statement group each lands in. Values are typed and
        # states serialised here, before the write lock is taken.
        merged: dict[tuple[str, str], dict[tuple[str, str], tuple[Any, str | None]]] = {}
        schemas: dict[str, TableSchema] = {}
        for item in batch:
            schema = schemas.setdefault(item.schema.storage_id, item.schema)
            values = merged.setdefault((schema.storage_id, item.row_id), {})
            for column_id, cell in item.cells.items():
                col = item.schema.column(column_id)
                if col is None:
                    continue
                values[(layout.value_name(col), layout.state_name(col))] = _stored(
                    col.dtype, cell, self.owner)
        now = layout.now_micros()
        self.on_write(schemas)
        try:
            await self._apply(merged, schemas, now)
        finally:
            self.on_write(schemas)
        self.flushes += 1

    async def _apply(self, merged: dict[tuple[str, str], dict[tuple[str, str], Any]],
                     schemas: dict[str, TableSchema], now: int) -> None:
        dialect = self.db.engine.dialect
        async with self.db.write() as conn:
            live: dict[str, set[str] | None] = {}
            for storage_id in schemas:
                current = await self.load_current(conn, storage_id)
                live[storage_id] = (None if current is None
                                    else {c.storage_name for c in current.columns})
            groups: dict[tuple[str, tuple[tuple[str, str], ...]], list[tuple[Any, ...]]] = {}
            for (storage_id, row_id), values in merged.items():
                names = live[storage_id]
                if names is None:
                    continue  # table deleted meanwhile
                targets = tuple(sorted(t for t in values if t[0] in names))  # else dropped
                if not targets:
                    continue
                params: list[Any] = [now]
                for target in targets:
                    params += values[target]
                params.append(row_id)
                groups.setdefault((storage_id, targets), []).append(tuple(params))
            # Tables in a fixed order on every replica: on PostgreSQL the knowledge change
            # feed's trigger takes a lock per knowledge table (see tables/change_feed.py), so
            # concurrent flushes must meet them in the same order or they could deadlock.
            for (storage_id, targets), rows in sorted(groups.items(), key=lambda g: g[0]):
                sql = write_sql.update_cells_sql(storage_id, targets, dialect)
                await conn.exec_driver_sql(sql, rows)
                self.cells_written += len(targets) * len(rows)


def _stored(dtype: str, cell: Cell, owner: str = "") -> tuple[Any, str | None]:
    """(value, state JSON text) to store; a value that does not fit the dtype fails the cell."""
    try:
        value = coerce(dtype, cell.value)
    except ValueTypeError as exc:
        failed = Cell(value=None, status=CellStatus.ERROR,
                      error=f"the generated value does not fit dtype {dtype}: {exc}",
                      usage=cell.usage, references=cell.references)
        return None, state_text(failed)
    return value, state_text(cell, owner)
