"""Table jobs: regenerate rows (all, a ``where`` filter, or ids) or backfill a column as a
durable background job, on the batch machinery (see :mod:`rowforge.server.batch.table_rows`).

A job has one batch request per row (request id = row id). Named rows are all queued before
the job is submitted; all rows or a ``where`` filter start with a first chunk and the rest is
queued in the background, durably (:mod:`.job_queue`). The batch worker claims rows with
leases, and hands each to :meth:`TableJobs.run_row`, which reads the row *when its turn
comes* and generates its target cells in DAG order through :meth:`RowEngine.run_job_row`.

What happens to rows touched while their job runs:

* a row deleted before or while its turn comes is not written; its result fails with
  reason ``ROW_DELETED`` (the job goes on);
* a row edited before its turn is generated from the edited values; a row whose other values
  change while its cells are being generated is generated once more from the new values
  (its cells are regenerated, never left stale);
* cells already written by this job (an attempt before a crash) are kept, not generated again;
* cancelling leaves every row not finished as it was (cells of rows in flight that were not
  written yet keep their previous value and state).

Chat tables and tables with a multi-turn column are refused (their rows must be generated in
order, each seeing the previous ones; a job generates rows concurrently).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rowforge.server.batch.api import BatchService
from rowforge.server.batch.model import ErrorDetail, Job, JobConfig, JobState, RequestInput
from rowforge.server.batch.table_rows import JobGate, RowOutcome, table_job_type
from rowforge.server.errors import FailedPrecondition, InvalidArgument, NotFound
from rowforge.server.tables.engine import RowEngine, regen_targets
from rowforge.server.tables.job_queue import FIRST_CHUNK, RowQueuer, chunk_cursor, requests_of
from rowforge.server.tables.model import CellStatus, LLMGenConfig, Row, TableSchema
from rowforge.server.tables.store import TableStore

#: Row ids one job may name explicitly (a ``where`` filter or all rows has no limit).
MAX_JOB_ROW_IDS = 10_000
#: Requests added per transaction while a job is populated.
_ADD_CHUNK = 2000


@dataclass(frozen=True)
class TableJobSpec:
    """What a table job generates.

    Attributes:
        table_type / table_id: The table.
        strategy: ``run_all`` / ``run_before`` / ``run_selected`` / ``run_after``.
        output_column: The pivot column ("" with ``run_all``).
        only_missing: Only cells that are empty or not DONE (a backfill).
        row_ids / where / all_rows: Which rows (exactly one is given).
    """

    table_type: str
    table_id: str
    strategy: str = "run_all"
    output_column: str = ""
    only_missing: bool = False
    row_ids: tuple[str, ...] = ()
    where: str = ""
    all_rows: bool = False

    def params(self) -> dict[str, Any]:
        """The job's stored parameters (its metadata), what each row needs."""
        return {"table_type": self.table_type, "table_id": self.table_id,
                "strategy": self.strategy, "output_column": self.output_column,
                "only_missing": self.only_missing, "where": self.where,
                "all_rows": self.all_rows, "row_count": len(self.row_ids)}


class TableJobs:
    """Creates table jobs and generates their rows (the batch worker's ``TableRowRunner``).

    Args:
        tables: The table store.
        engine: The row engine.
        batch: The batch service whose jobs carry the rows.
    """

    def __init__(self, tables: TableStore, engine: RowEngine, batch: BatchService) -> None:
        self.tables = tables
        self.engine = engine
        self.batch = batch
        self.reader = SharedRowReads(tables)
        self.queuer = RowQueuer(tables, batch)

    async def start(self) -> None:
        """Continue queuing the rows of jobs a previous run left half queued."""
        await self.queuer.resume()

    async def stop(self) -> None:
        await self.queuer.stop()

    async def create(self, project_id: str, spec: TableJobSpec,
                     idempotency_key: str = "") -> Job:
        """Start a job over the selected rows (or return the one made with the same key).

        Raises:
            NotFound: unknown table or row id.
            InvalidArgument: no or several row selections, bad ``where``, strategy or column.
            FailedPrecondition: a chat or multi-turn table; no row matches (``NO_ROWS``).
        """
        given = sum((bool(spec.row_ids), bool(spec.where), spec.all_rows))
        if given != 1:
            raise InvalidArgument.field(
                "row_ids", "give exactly one of row_ids, where or all_rows"
                f" ({given} given)", reason="ROW_SELECTION_REQUIRED")
        if len(spec.row_ids) > MAX_JOB_ROW_IDS:
            raise InvalidArgument.field("row_ids", f"at most {MAX_JOB_ROW_IDS} row ids "
                                        "(use where or all_rows for more)",
                                        reason="TOO_MANY_ROWS")
        schema = await self.tables.get_table(project_id, spec.table_type, spec.table_id)
        plan = self.engine.plan(schema)
        targets = regen_targets(plan, spec.strategy, spec.output_column)
        self.check_table(schema)
        if not spec.row_ids:
            return await self._start_queued(project_id, schema, spec, targets,
                                            idempotency_key)
        row_ids = await self._select(schema, spec)
        return await self._start(project_id, spec, targets, row_ids, idempotency_key)

    def _config(self, schema: TableSchema, spec: TableJobSpec, targets: Sequence[str]
                ) -> JobConfig:
        plan = self.engine.plan(schema)
        model = ""
        for name in targets:
            gen = plan.columns[name].column.gen_config
            if isinstance(gen, LLMGenConfig):
                model = gen.model or self.engine.models.default("chat").id
                break
        return JobConfig(model=model, job_type=table_job_type(spec.table_type, spec.table_id),
                         metadata=spec.params())

    async def _start_queued(self, project_id: str, schema: TableSchema, spec: TableJobSpec,
                            targets: Sequence[str], idempotency_key: str) -> Job:
        """All rows or a ``where`` filter: the job starts with its first chunk of rows, the
        rest are queued in the background (see :mod:`.job_queue`)."""
        upto = await self.tables.last_sequence(schema)
        keys = await self.tables.row_keys(schema, where=spec.where, upto=upto,
                                          limit=FIRST_CHUNK)
        if not keys:
            raise FailedPrecondition("no row matches the job's selection", reason="NO_ROWS",
                                     metadata={"tableId": spec.table_id})
        config = self._config(schema, spec, targets)
        job, created = await self.batch.store.create_job(project_id, config, idempotency_key)
        if not created and job.state is not JobState.CREATED:
            return job  # a retry; a job left CREATED by a crash is queued now
        cursor = chunk_cursor(keys, FIRST_CHUNK, upto)
        if await self.batch.store.queue_requests(project_id, job.id, requests_of(keys),
                                                 after=None, cursor=cursor):
            job = await self.batch.submit(project_id, job.id)
            if cursor is not None:
                self.queuer.spawn(project_id, job.id, dict(config.metadata or {}), cursor)
        return await self.batch.get_job(project_id, job.id)

    async def _start(self, project_id: str, spec: TableJobSpec, targets: Sequence[str],
                     row_ids: list[str], idempotency_key: str) -> Job:
        """Named rows (at most :data:`MAX_JOB_ROW_IDS`, or an import's): all queued, then
        the job is submitted."""
        if not row_ids:
            raise FailedPrecondition("no row matches the job's selection", reason="NO_ROWS",
                                     metadata={"tableId": spec.table_id})
        config = self._config(await self.tables.get_table(project_id, spec.table_type,
                                                          spec.table_id), spec, targets)
        job, created = await self.batch.store.create_job(project_id, config, idempotency_key)
        if not created:
            return job
        for start in range(0, len(row_ids), _ADD_CHUNK):
            await self.batch.store.add_requests(
                project_id, job.id, [RequestInput(row_id, ()) for row_id in
                                     row_ids[start:start + _ADD_CHUNK]])
        return await self.batch.submit(project_id, job.id)

    def check_table(self, schema: TableSchema) -> None:
        """Raise FAILED_PRECONDITION when jobs cannot generate the table's rows."""
        if self.engine.plan(schema).sequential:
            raise FailedPrecondition(
                f"table {schema.id!r} generates its rows in order (a chat table or a "
                "multi-turn column); regenerate it with StreamRegenRows",
                reason="TABLE_JOB_SEQUENTIAL_TABLE", metadata={"tableId": schema.id})

    async def create_for_rows(self, project_id: str, schema: TableSchema,
                              row_ids: list[str]) -> Job:
        """A job generating the PENDING (missing) cells of rows just inserted (an import)."""
        self.check_table(schema)
        spec = TableJobSpec(schema.table_type, schema.id, only_missing=True,
                            row_ids=tuple(row_ids))
        return await self._start(project_id, spec, self.engine.plan(schema).order, row_ids, "")

    async def _select(self, schema: TableSchema, spec: TableJobSpec) -> list[str]:
        """The named row ids, checked: distinct, and all existing (NotFound names one)."""
        seen: set[str] = set()
        for i, row_id in enumerate(spec.row_ids):
            if not row_id or row_id in seen:
                raise InvalidArgument.field(f"row_ids[{i}]", "must be a distinct row id")
            seen.add(row_id)
        ids = list(spec.row_ids)
        for start in range(0, len(ids), _ADD_CHUNK):
            await self.tables.get_rows(schema, ids[start:start + _ADD_CHUNK], columns=["ID"])
        return ids

    # --- the batch worker's TableRowRunner ----------------------------------------------

    async def run_row(self, project_id: str, job_id: str, params: dict[str, Any],
                      row_id: str, gate: JobGate) -> RowOutcome:
        """Generate one row of job ``job_id`` (see the module docstring)."""
        try:
            schema = await self.tables.get_table(project_id, params["table_type"],
                                                 params["table_id"])
        except NotFound as exc:
            return _failed(row_id, {}, ErrorDetail("NOT_FOUND", "TABLE_NOT_FOUND",
                                                   exc.message))
        try:
            result = await self.engine.run_job_row(
                schema, row_id, job_id=job_id, strategy=params.get("strategy") or "run_all",
                output_column=params.get("output_column") or "",
                only_missing=bool(params.get("only_missing")), gate=gate,
                read_row=self.reader.read)
        except InvalidArgument as exc:  # the column was dropped or changed since the start
            return _failed(row_id, {}, ErrorDetail("FAILED_PRECONDITION", exc.reason,
                                                   exc.message))
        if result.deleted:
            return _failed(row_id, {"deleted": True}, ErrorDetail(
                "NOT_FOUND", "ROW_DELETED", f"row {row_id!r} was deleted before it was "
                "generated; nothing was written"))
        summary: dict[str, Any] = {
            "row_id": row_id, "cells": {c: cell.status.value for c, cell in result.cells.items()},
            "generated": list(result.generated)}
        if result.regenerated:
            summary["regenerated"] = True
        usages = [u for c in set(result.generated)
                  if (u := result.cells[c].usage if c in result.cells else None) is not None]
        prompt = sum(u.prompt_tokens for u in usages)
        completion = sum(u.completion_tokens for u in usages)
        failed = [(c, cell) for c, cell in result.cells.items()
                  if cell.status == CellStatus.ERROR]
        if failed:
            column, cell = failed[0]
            return RowOutcome(False, json.dumps(summary), prompt, completion, ErrorDetail(
                "FAILED_PRECONDITION", "CELL_FAILED", f"column {column!r}: {cell.error}"))
        return RowOutcome(True, json.dumps(summary), prompt, completion)


def _failed(row_id: str, extra: dict[str, Any], error: ErrorDetail) -> RowOutcome:
    return RowOutcome(False, json.dumps({"row_id": row_id, **extra}), error=error)


#: Row id -> the reads waiting for it.
_Waiting = dict[str, list["asyncio.Future[Row | None]"]]


class SharedRowReads:
    """Reads rows for the rows of jobs in flight, sharing queries: the reads asked for
    during one event-loop turn (per table) become one ``get_rows`` (a job has up to twice
    ``batch_workers`` rows in flight, each read twice; one query each cost ~1 ms of server
    CPU per row on SQLite, about a third of a row's cost).
    """

    def __init__(self, tables: TableStore, max_batch: int = 500) -> None:
        self.tables = tables
        self.max_batch = max_batch
        self._pending: dict[str, tuple[TableSchema, _Waiting]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def read(self, schema: TableSchema, row_id: str) -> Row | None:
        """The row now (None: it does not exist)."""
        key = schema.storage_id or f"{schema.project_id}/{schema.table_type}/{schema.id}"
        entry = self._pending.get(key)
        if entry is None:
            entry = self._pending[key] = (schema, {})
            asyncio.get_running_loop().call_soon(self._flush, key)
        future: asyncio.Future[Row | None] = asyncio.get_running_loop().create_future()
        entry[1].setdefault(row_id, []).append(future)
        return await future

    def _flush(self, key: str) -> None:
        schema, waiting = self._pending.pop(key)
        ids = list(waiting)
        for start in range(0, len(ids), self.max_batch):
            chunk = {i: waiting[i] for i in ids[start:start + self.max_batch]}
            task = asyncio.ensure_future(self._load(schema, chunk))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _load(self, schema: TableSchema, waiting: _Waiting) -> None:
        try:
            found = await self._rows(schema, list(waiting))
        except BaseException as exc:
            for futures in waiting.values():
                for f in futures:
                    if not f.done():
                        f.set_exception(exc if isinstance(exc, Exception)
                                        else asyncio.CancelledError())
            if not isinstance(exc, Exception):
                raise
            return
        for row_id, futures in waiting.items():
            for f in futures:
                if not f.done():
                    f.set_result(found.get(row_id))

    async def _rows(self, schema: TableSchema, ids: list[str]) -> dict[str, Row]:
        try:
            return {r.id: r for r in await self.tables.get_rows(schema, ids)}
        except NotFound:  # some were deleted: read the others one by one
            out: dict[str, Row] = {}
            for row_id in ids:
                try:
                    out[row_id] = (await self.tables.get_rows(schema, [row_id]))[0]
                except NotFound:
                    continue
            return out
