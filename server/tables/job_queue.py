"""Queuing a table job's rows in the background, durably, while its first rows generate.

A job over all rows or a ``where`` filter is created with its first chunk of rows queued and
is submitted at once; the rest are queued here in keyset chunks of the rows' insertion
sequence, each chunk in one transaction with the job's ``queue_cursor`` (see
:meth:`BatchStore.queue_requests`): ``{"after": <last sequence queued>, "upto": <newest
sequence when the job was created>}``. So:

* the job covers the rows that existed when it was created (rows added later are not in it;
  rows deleted before their turn are not queued, or fail ``ROW_DELETED``);
* a restart (or a replica taking over a dead one's work) continues from the cursor, and a
  row is never queued twice: a chunk moves the cursor only from where the queuer read it;
* cancelling the job stops the queuing (its next chunk is refused); the job does not end
  while rows are still to be queued.

Listing and queuing 20,000 rows took ~3 s of a unary CreateTableJob before the first call
started; now the first call starts after one chunk.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from rowforge.server.batch.api import BatchService
from rowforge.server.batch.model import RequestInput
from rowforge.server.batch.table_rows import TABLE_JOB_PREFIX
from rowforge.server.errors import Aborted, NotFound, RowforgeError
from rowforge.server.tables.model import TableSchema
from rowforge.server.tables.store import TableStore

log = logging.getLogger("rowforge.server.tables.jobs")

#: Rows queued with the job before CreateTableJob returns (enough for the first claims).
FIRST_CHUNK = 256
#: Rows queued per transaction afterwards.
CHUNK = 1000
#: Wait before retrying a chunk whose read or write failed (the database was away).
RETRY_S = 1.0


def cursor_text(after: int, upto: int) -> str:
    return json.dumps({"after": after, "upto": upto}, separators=(",", ":"))


def chunk_cursor(keys: list[tuple[int, str]], limit: int, upto: int) -> str | None:
    """The cursor after a chunk of ``keys`` read with ``limit`` (None: it was the last)."""
    return cursor_text(keys[-1][0], upto) if len(keys) >= limit else None


def requests_of(keys: list[tuple[int, str]]) -> list[RequestInput]:
    return [RequestInput(row_id, ()) for _, row_id in keys]


class RowQueuer:
    """Queues the remaining rows of table jobs, one task per job (see the module docstring).

    Args:
        tables: The table store (reads the rows' keys).
        batch: The batch service (its store queues, its worker is woken).
        chunk: Rows per transaction.
    """

    def __init__(self, tables: TableStore, batch: BatchService, *, chunk: int = CHUNK) -> None:
        self.tables = tables
        self.batch = batch
        self.chunk = chunk
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def spawn(self, project_id: str, job_id: str, params: dict[str, Any],
              cursor: str) -> None:
        """Queue the rest of job ``job_id`` from ``cursor`` (no-op if already queuing it)."""
        if job_id in self._tasks:
            return
        task = asyncio.create_task(self._run(project_id, job_id, params, cursor),
                                   name=f"table-job-queue-{job_id}")
        self._tasks[job_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(job_id, None))

    async def resume(self, _replica_id: str = "") -> int:
        """Continue the queuing of every job that still has rows to queue (at start, or
        when a dead replica's work is taken over); returns how many were started."""
        started = 0
        for job, cursor in await self.batch.store.queuing_jobs(TABLE_JOB_PREFIX):
            if job.id in self._tasks:
                continue
            if job.state.value == "populating":  # stopped between its first chunk and submit
                await self.batch.submit(job.project_id, job.id)
            self.spawn(job.project_id, job.id, dict(job.config.metadata or {}), cursor)
            started += 1
        if started:
            log.info("resumed queuing the rows of %d table jobs", started)
        return started

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    @property
    def queuing(self) -> set[str]:
        """Ids of the jobs this process is queuing."""
        return set(self._tasks)

    async def _run(self, project_id: str, job_id: str, params: dict[str, Any],
                   cursor: str) -> None:
        schema: TableSchema | None = None
        next_cursor: str | None = cursor
        while next_cursor is not None:
            position = json.loads(next_cursor)
            try:
                if schema is None:
                    schema = await self.tables.get_table(project_id, params["table_type"],
                                                         params["table_id"])
                keys = await self.tables.row_keys(
                    schema, where=str(params.get("where") or ""), after=int(position["after"]),
                    upto=int(position["upto"]), limit=self.chunk)
                following = chunk_cursor(keys, self.chunk, int(position["upto"]))
            except Aborted:  # the table's columns changed meanwhile: read it again
                schema = None
                continue
            except RowforgeError as exc:
                # the table was deleted or its filter no longer compiles: queue no more
                log.warning("table job %s queues no more rows: %s", job_id, exc)
                keys, following = [], None
            except (SQLAlchemyError, OSError):
                log.exception("queuing rows of table job %s failed; retrying", job_id)
                await asyncio.sleep(RETRY_S)
                continue
            try:
                queued = await self.batch.store.queue_requests(
                    project_id, job_id, requests_of(keys), after=next_cursor, cursor=following)
            except (SQLAlchemyError, OSError):
                log.exception("queuing rows of table job %s failed; retrying", job_id)
                await asyncio.sleep(RETRY_S)
                continue
            except NotFound:
                return
            self.batch.worker.wake()
            self.batch.signals.notify(job_id)
            if not queued:  # cancelled, or another replica queues it
                return
            next_cursor = following
            await asyncio.sleep(0)  # let the rows already queued run between chunks
