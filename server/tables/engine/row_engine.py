"""The row engine: generates the cells of rows, persisting each as it completes.

Rows of a call run concurrently (or one after another: ``concurrent=False``, chat tables and
tables with a multi-turn column); within a row, each generated column starts as soon as the
generated columns it reads are final, so independent columns run concurrently. Cells are
bounded per table (``Settings.table_concurrency``) and model calls per model
(``Settings.model_concurrency``), across all calls of this process.

A failed cell is an ERROR cell, never a failed call; its dependants become ERROR naming it.
When the call is cancelled (client gone, deadline), the cells not generated are written as
SKIPPED ("generation cancelled") in a shielded step, so no cell is left PENDING or RUNNING.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rowforge.fastcore import MissingReferenceError, Template
from rowforge.server.config import Settings
from rowforge.server.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    RowforgeError,
    Unavailable,
)
from rowforge.server.metrics import DISABLED, Metrics
from rowforge.server.providers import (
    ChatResult,
    EmbedResult,
    Message,
    ModelRegistry,
    ModelSpec,
    default_providers,
    estimate_tokens,
)
from rowforge.server.tables.engine.cells import (
    BatchColumnExecutor,
    CellRun,
    ColumnExecutor,
    ExecutorRegistry,
    default_executors,
)
from rowforge.server.tables.engine.events import (
    CellCompleted,
    Completed,
    EventSink,
    RowCompleted,
    RowCreated,
    RowResult,
)
from rowforge.server.tables.engine.plan import ColumnPlan, TablePlan, build_plan
from rowforge.server.tables.engine.ports import (
    CallGate,
    FileAccess,
    ModelAccess,
    Retriever,
    SandboxRunner,
    SandboxSource,
)
from rowforge.server.tables.model import (
    EMBEDDING_DTYPE,
    Cell,
    CellStatus,
    ColumnSchema,
    EmbedGenConfig,
    LLMGenConfig,
    PythonGenConfig,
    Row,
    TableSchema,
)
from rowforge.server.tables.values import ValueTypeError, check_vector, coerce

log = logging.getLogger("rowforge.engine")

#: Rows one generation call may carry.
MAX_ROWS_PER_CALL = 100
#: Regeneration strategies (around an output column).
STRATEGIES = ("run_all", "run_before", "run_selected", "run_after")
CANCELLED_MESSAGE = "generation cancelled"
INTERNAL_MESSAGE = "internal error while generating this cell; the server logged the details"
#: A batch executor waits at most this long for the other rows of its call.
BATCH_WINDOW_S = 0.005
MAX_BATCH = 256


#: Column kinds as metrics label them.
_KINDS: dict[type, str] = {LLMGenConfig: "llm", PythonGenConfig: "python",
                           EmbedGenConfig: "embed"}
#: Cell statuses as metrics label them (an enum's ``.name`` is two Python calls per cell).
_STATUSES: dict[CellStatus, str] = {status: status.name.lower() for status in CellStatus}


def check_row_count(count: int, field_name: str) -> None:
    """1..100 rows per call, else INVALID_ARGUMENT naming ``field_name``."""
    if count < 1:
        raise InvalidArgument.field(field_name, "at least one row is required")
    if count > MAX_ROWS_PER_CALL:
        raise InvalidArgument.field(
            field_name, f"at most {MAX_ROWS_PER_CALL} rows per call (got {count})",
            reason="TOO_MANY_ROWS", metadata={"limit": MAX_ROWS_PER_CALL, "count": count})


def regen_targets(plan: TablePlan, strategy: str, output_column: str,
                  field_name: str = "output_column_id") -> list[str]:
    """The generated columns a regeneration runs, in dependency order.

    Raises:
        InvalidArgument: unknown strategy, or ``output_column`` missing/unknown/not generated
            for a strategy that needs it.
    """
    if strategy not in STRATEGIES:
        raise InvalidArgument.field("regen_strategy", f"unknown strategy {strategy!r}")
    schema = plan.schema
    if strategy == "run_all" and not output_column:
        return list(plan.order)
    if not output_column:
        raise InvalidArgument.field(field_name, f"is required with {strategy}")
    col = schema.column(output_column)
    if col is None:
        raise InvalidArgument.field(field_name, f"unknown column {output_column!r}",
                                    reason="COLUMN_NOT_FOUND")
    if col.gen_config is None:
        raise InvalidArgument.field(field_name, f"column {output_column!r} is an input column; "
                                                "name a generated column",
                                    reason="NOT_A_GENERATED_COLUMN")
    if strategy == "run_all":
        return list(plan.order)
    if strategy == "run_selected":
        return [output_column]
    position = {c.id: i for i, c in enumerate(schema.columns)}
    pivot = position[output_column]
    if strategy == "run_before":
        return [c for c in plan.order if position[c] <= pivot]
    return [c for c in plan.order if position[c] >= pivot]


class _Job:
    """One row being generated."""

    __slots__ = ("cells", "final", "index", "outcome", "regen", "row_id", "targets", "values")

    def __init__(self, index: int, row: Row, targets: Sequence[str], *, regen: bool) -> None:
        self.index = index
        self.row_id = row.id
        self.cells = dict(row.cells)
        self.values = {name: cell.value for name, cell in row.cells.items()}
        self.targets = list(targets)
        self.final: set[str] = set()
        self.regen = regen
        #: The result, once every target is final.
        self.outcome: RowResult | None = None

    def finish(self, column: str, cell: Cell) -> None:
        self.cells[column] = cell
        self.values[column] = cell.value
        self.final.add(column)

    def result(self, plan: TablePlan) -> RowResult:
        cells: dict[str, Cell] = {}
        targets = set(self.targets)
        for col in plan.schema.columns:
            if col.gen_config is None:
                continue
            cell = self.cells.get(col.id) or Cell(value=None, status=CellStatus.SKIPPED)
            if self.regen and col.id not in targets:  # not selected for regeneration
                cell = Cell(value=cell.value, status=CellStatus.SKIPPED, usage=cell.usage,
                            references=cell.references)
            cells[col.id] = cell
        return RowResult(self.row_id, cells)


@dataclass
class _Call:
    plan: TablePlan
    sink: EventSink | None
    deadline: float | None
    #: The table's bound on concurrent cells.
    table_slot: asyncio.Semaphore
    batchers: dict[str, _Batcher] = field(default_factory=dict)
    #: What executors use (the engine itself, or a table job's gated view of it).
    services: Any = None
    #: The table job writing the cells ("": interactive).
    tag: str = ""
    #: On cancellation leave unfinished cells as they were (a table job: its row is resumed
    #: or, cancelled, left untouched) instead of writing them SKIPPED.
    leave_unfinished: bool = False


class _GatedServices:
    """The engine as a table job's cells see it: model calls pass through the job's gate
    (the batch worker's per-model rate limiter, call log and retries), not the interactive
    model slots, so interactive calls never queue behind a job."""

    #: The gate retries transient errors; the executors must not retry them again.
    retries_calls = True

    def __init__(self, engine: RowEngine, gate: CallGate) -> None:
        self._engine = engine
        self._gate = gate
        self.providers = _GatedModels(engine.providers, gate)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def model_slot(self, model_id: str) -> contextlib.AbstractAsyncContextManager[Any]:
        return contextlib.nullcontext()


class _GatedModels:
    """:class:`ModelAccess` whose calls go through a :class:`CallGate`."""

    def __init__(self, inner: ModelAccess, gate: CallGate) -> None:
        self._inner = inner
        self._gate = gate

    async def chat(self, spec: ModelSpec, messages: Sequence[Message], **options: Any
                   ) -> ChatResult:
        estimate = estimate_tokens(messages) + int(options.get("max_tokens") or 0)
        result: ChatResult = await self._gate.call(
            spec, estimate, lambda: self._inner.chat(spec, messages, **options))
        return result

    async def embed(self, spec: ModelSpec, texts: Sequence[str], **options: Any
                    ) -> EmbedResult:
        estimate = sum(len(t) for t in texts) // 4 + 1
        result: EmbedResult = await self._gate.call(
            spec, estimate, lambda: self._inner.embed(spec, texts, **options))
        return result


@dataclass(frozen=True)
class JobRowResult:
    """What a table job did to one row.

    Attributes:
        cells: Target column -> its cell now (those written by earlier attempts included).
        generated: Columns generated by this attempt.
        deleted: The row does not exist (any more): nothing was written.
        regenerated: Its inputs changed while it was generated, so it was generated again.
    """

    cells: dict[str, Cell]
    generated: tuple[str, ...] = ()
    deleted: bool = False
    regenerated: bool = False


class _Batcher:
    """Collects one batch column's cells across the rows of a call for ``run_batch``."""

    def __init__(self, executor: BatchColumnExecutor, expected: int) -> None:
        self.executor = executor
        self.expected = expected
        self.pending: list[tuple[CellRun, asyncio.Future[Cell]]] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self._timer: asyncio.TimerHandle | None = None

    async def submit(self, run: CellRun) -> Cell:
        future: asyncio.Future[Cell] = asyncio.get_running_loop().create_future()
        self.pending.append((run, future))
        self._maybe_flush()
        return await future

    def withdraw(self) -> None:
        """A row will not submit (its input failed)."""
        self.expected -= 1
        self._maybe_flush()

    def _maybe_flush(self) -> None:
        if not self.pending:
            return
        if len(self.pending) >= min(self.expected, MAX_BATCH):
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(BATCH_WINDOW_S, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self.pending = self.pending, []
        if not batch:
            return
        self.expected -= len(batch)
        task = asyncio.get_running_loop().create_task(self._run(batch))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(self, batch: list[tuple[CellRun, asyncio.Future[Cell]]]) -> None:
        try:
            cells = await self.executor.run_batch([run for run, _ in batch])
            if len(cells) != len(batch):
                raise RuntimeError(f"run_batch returned {len(cells)} cells for {len(batch)}")
        except RowforgeError as exc:
            cells = [_error(exc.message) for _ in batch]
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except Exception:
            log.exception("batch column executor failed")
            cells = [_error(INTERNAL_MESSAGE) for _ in batch]
        for (_, future), cell in zip(batch, cells, strict=True):
            if not future.done():
                future.set_result(cell)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for task in self.tasks:
            task.cancel()


def _error(message: str) -> Cell:
    return Cell(value=None, status=CellStatus.ERROR, error=message)


def _first_error(group: BaseExceptionGroup[Any]) -> BaseException:
    """The exception to re-raise for a failed task group (not a cancellation if avoidable)."""
    leaves: list[BaseException] = []
    stack: list[BaseException] = [group]
    while stack:
        exc = stack.pop(0)
        if isinstance(exc, BaseExceptionGroup):
            stack[:0] = list(exc.exceptions)
        else:
            leaves.append(exc)
    for exc in leaves:
        if not isinstance(exc, asyncio.CancelledError):
            return exc
    return leaves[0] if leaves else asyncio.CancelledError()


class RowEngine:
    """Generates rows of tables (one per process).

    Args:
        store: The rows (the :class:`TableStore`, or any object with its
            ``insert_rows``/``write_cells``/``get_rows``/``history``/``update_rows``).
        models: The model registry.
        providers: Makes the model calls (None: the process's ``default_providers()``).
        settings: Bounds and timeouts (default: the defaults).
        files: The file store cells read and write (None: file cells fail
            ``FILES_UNAVAILABLE``).
        retriever: Finds RAG references (None: RAG columns fail ``RAG_UNAVAILABLE``).
        sandbox: Hands out the Python sandbox (None: Python cells fail
            ``SANDBOX_UNAVAILABLE``).
        executors: Column executors by gen-config type (default: LLM, Python, embedding).
    """

    #: Interactive calls are retried by the executors (see ``RetryPolicy``).
    retries_calls = False

    def __init__(self, *, store: Any, models: ModelRegistry, providers: ModelAccess | None = None,
                 settings: Settings | None = None,
                 files: FileAccess | None = None, retriever: Retriever | None = None,
                 sandbox: SandboxSource | None = None,
                 executors: ExecutorRegistry | None = None,
                 metrics: Metrics = DISABLED,
                 plan_cache_size: int = 256) -> None:
        self.store = store
        self.models = models
        self.providers: ModelAccess = providers or default_providers()
        self.settings = settings or Settings()
        self.files = files
        self.rag = retriever
        self.sandbox_source = sandbox
        self.metrics = metrics
        self.executors = executors or default_executors()
        self._plans: OrderedDict[tuple[str, str, str, str, int], TablePlan] = OrderedDict()
        self._plan_cache_size = plan_cache_size
        self.template = functools.lru_cache(maxsize=4096)(Template)
        # Models are few (the registry's): their bounds live as long as the engine.
        self._model_slots: dict[str, asyncio.Semaphore] = {}
        # Tables are many. Weak: a bound nobody holds has no state worth keeping; each call
        # holds its table's (``_Call.table_slot``) while it runs.
        self._table_slots: weakref.WeakValueDictionary[str, asyncio.Semaphore] = (
            weakref.WeakValueDictionary())
        self._background: set[asyncio.Task[Any]] = set()

    # -- components (EngineServices) -------------------------------------------------------

    async def sandbox(self) -> SandboxRunner:
        """The started Python sandbox.

        Raises:
            RowforgeError: why Python cells cannot run now (the cell's error).
        """
        if self.sandbox_source is None:
            raise Unavailable("the Python sandbox is not available on this server",
                              reason="SANDBOX_UNAVAILABLE")
        return await self.sandbox_source.acquire()

    def model_slot(self, model_id: str) -> asyncio.Semaphore:
        """Bound concurrent calls of one model (``Settings.model_concurrency``): use as
        ``async with engine.model_slot(model_id):``."""
        slot = self._model_slots.get(model_id)
        if slot is None:
            slot = asyncio.Semaphore(self.settings.model_concurrency)
            self._model_slots[model_id] = slot
        return slot

    def _table_slot(self, schema: TableSchema) -> asyncio.Semaphore:
        key = schema.storage_id or f"{schema.project_id}/{schema.table_type}/{schema.id}"
        slot = self._table_slots.get(key)
        if slot is None:
            slot = asyncio.Semaphore(self.settings.table_concurrency)
            self._table_slots[key] = slot
        return slot

    async def close(self, timeout_s: float = 10.0) -> None:
        """Let pending clean-up writes (cells marked SKIPPED) finish."""
        if self._background:
            _, pending = await asyncio.wait(list(self._background), timeout=timeout_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    # -- plans -----------------------------------------------------------------------------

    def plan(self, schema: TableSchema) -> TablePlan:
        """The cached plan of this schema version.

        Raises:
            DagError: the columns cannot be ordered (FAILED_PRECONDITION naming the column).
        """
        key = (schema.storage_id, schema.project_id, schema.table_type, schema.id,
               schema.version)
        plan = self._plans.get(key)
        if plan is not None and (plan.schema is schema or plan.schema == schema):
            self._plans.move_to_end(key)
            return plan
        plan = build_plan(schema, self.template)
        self._plans[key] = plan
        if len(self._plans) > self._plan_cache_size:
            self._plans.popitem(last=False)
        return plan

    # -- public API ------------------------------------------------------------------------

    async def add_rows(self, schema: TableSchema, data: Sequence[Mapping[str, Any]], *,
                       concurrent: bool = True, sink: EventSink | None = None,
                       deadline: float | None = None) -> list[RowResult]:
        """Insert rows (one transaction) and generate their generated columns.

        Args:
            schema: The table.
            data: 1..100 rows of column id -> value.
            concurrent: Generate rows concurrently (forced off for chat/multi-turn tables).
            sink: Receives the stream's events (None: no events, no deltas).
            deadline: ``loop.time()`` the call must end by (bounds retries and model calls).

        Returns:
            One result per row, in request order.

        Raises:
            InvalidArgument: row count, unknown columns, bad values (nothing is written).
            DagError: the table's columns cannot be ordered.
        """
        check_row_count(len(data), "data")
        plan = self.plan(schema)
        rows = await self._insert(schema, data)
        jobs = [_Job(i, row, [c for c in plan.order
                              if row.cells.get(c, Cell()).status == CellStatus.PENDING],
                     regen=False) for i, row in enumerate(rows)]
        return await self._run(plan, jobs, concurrent=concurrent, sink=sink, deadline=deadline)

    async def generate(self, schema: TableSchema, rows: Sequence[Row], *,
                       concurrent: bool = True, sink: EventSink | None = None,
                       deadline: float | None = None) -> list[RowResult]:
        """Generate the PENDING cells of rows already stored (e.g. imported rows)."""
        plan = self.plan(schema)
        jobs = [_Job(i, row, [c for c in plan.order
                              if row.cells.get(c, Cell()).status == CellStatus.PENDING],
                     regen=False) for i, row in enumerate(rows)]
        return await self._run(plan, jobs, concurrent=concurrent, sink=sink, deadline=deadline)

    async def generate_stored(self, schema: TableSchema, rows: Sequence[Row], *,
                              columns: Sequence[str] | None = None) -> int:
        """Generate rows already inserted with PENDING cells (an import, a file's chunks), in
        calls of :data:`MAX_ROWS_PER_CALL` rows; return how many cells ended in ERROR.

        Args:
            columns: Only these generated columns (default: every PENDING one).
        """
        plan = self.plan(schema)
        order = [c for c in plan.order if columns is None or c in columns]
        errors = 0
        for start in range(0, len(rows), MAX_ROWS_PER_CALL):
            batch = rows[start:start + MAX_ROWS_PER_CALL]
            jobs = [_Job(i, row, [c for c in order
                                  if row.cells.get(c, Cell()).status == CellStatus.PENDING],
                         regen=False) for i, row in enumerate(batch)]
            for result in await self._run(plan, jobs, concurrent=True, sink=None,
                                          deadline=None):
                errors += sum(1 for cell in result.cells.values()
                              if cell.status == CellStatus.ERROR)
        return errors

    async def update_rows(self, schema: TableSchema,
                          updates: Mapping[str, Mapping[str, Any]]) -> int:
        """Update stored values (the store's ``update_rows``), then re-embed the embedding
        columns whose source text changed: batched per column, a failure is an ERROR cell
        (the row drops out of vector search) rather than a failed update. A vector given in
        the same update is kept. Returns the rows updated."""
        count = int(await self.store.update_rows(schema, updates))
        runs = []
        for col in schema.columns:
            config = col.gen_config
            if not isinstance(config, EmbedGenConfig):
                continue
            ids = [row_id for row_id, values in updates.items()
                   if config.source_column in values and col.id not in values]
            if ids:
                runs.append(self.regen_rows(schema, ids, strategy="run_selected",
                                            output_column=col.id))
        if runs:
            await asyncio.gather(*runs)
        return count

    async def regen_rows(self, schema: TableSchema, row_ids: Sequence[str], *,
                         strategy: str = "run_all", output_column: str = "",
                         concurrent: bool = True, sink: EventSink | None = None,
                         deadline: float | None = None) -> list[RowResult]:
        """Regenerate generated columns of existing rows.

        Args:
            strategy: ``run_all``, ``run_before`` (up to and including ``output_column``),
                ``run_selected`` (only it) or ``run_after`` (it and the columns after it).
            output_column: The pivot generated column.

        Raises:
            InvalidArgument: row count, duplicate ids, bad strategy/column.
            NotFound: an unknown row id (``ROW_NOT_FOUND``).
        """
        check_row_count(len(row_ids), "row_ids")
        seen: set[str] = set()
        for i, row_id in enumerate(row_ids):
            if not row_id:
                raise InvalidArgument.field(f"row_ids[{i}]", "must not be empty")
            if row_id in seen:
                raise InvalidArgument.field(f"row_ids[{i}]", f"row {row_id!r} is listed twice")
            seen.add(row_id)
        plan = self.plan(schema)
        targets = regen_targets(plan, strategy, output_column)
        rows = await self.store.get_rows(schema, list(row_ids))
        jobs = [_Job(i, row, targets, regen=True) for i, row in enumerate(rows)]
        return await self._run(plan, jobs, concurrent=concurrent, sink=sink, deadline=deadline)

    # -- the run ---------------------------------------------------------------------------

    async def _insert(self, schema: TableSchema, data: Sequence[Mapping[str, Any]]) -> list[Row]:
        insert = asyncio.ensure_future(self.store.insert_rows(schema, list(data)))
        try:
            return await asyncio.shield(insert)
        except asyncio.CancelledError:
            # The insert may still commit: its rows must not stay PENDING.
            self._spawn(self._skip_inserted(schema, insert))
            raise

    async def _skip_inserted(self, schema: TableSchema, insert: asyncio.Future[list[Row]]) -> None:
        try:
            rows = await insert
        except Exception:
            return  # nothing was written
        plan = self.plan(schema)
        jobs = [_Job(i, row, [c for c in plan.order
                              if row.cells.get(c, Cell()).status == CellStatus.PENDING],
                     regen=False) for i, row in enumerate(rows)]
        await self._write_leftovers(schema, jobs, CANCELLED_MESSAGE)

    async def run_job_row(self, schema: TableSchema, row_id: str, *, job_id: str,
                          strategy: str, output_column: str, only_missing: bool,
                          gate: CallGate, read_row: RowReader | None = None) -> JobRowResult:
        """Generate one row for table job ``job_id``: the ``strategy`` targets, in DAG order,
        each cell written once and tagged with the job.

        A target this job already wrote (an attempt before a crash) is kept, not generated
        again; with ``only_missing`` a target that holds a DONE non-empty value is kept too.
        When the row's other values changed while it was generated (an edit), its targets
        are generated once more from the new values; a deleted row is reported, untouched.

        ``read_row`` reads the row (None: deleted); by default one ``get_rows`` per read (a
        job passes one that shares reads between its rows in flight).

        Raises:
            InvalidArgument: bad strategy or column (the table changed since the job began).
        """
        read = read_row or self._read_row
        plan = self.plan(schema)
        targets = regen_targets(plan, strategy, output_column)
        regenerated = False
        generated: list[str] = []
        for attempt in range(2):
            row = await read(schema, row_id)
            if row is None:
                return JobRowResult({}, tuple(generated), deleted=True)
            todo = [c for c in targets if not _written_by(row.cells.get(c), job_id)]
            if only_missing:
                todo = [c for c in todo if _missing(row.cells.get(c))]
            if attempt == 1:
                todo = list(targets)
            job = _Job(0, row, todo, regen=True)
            call = _Call(plan, None, None, _UNBOUNDED, services=_GatedServices(self, gate),
                         tag=job_id, leave_unfinished=True)
            if todo:
                await self._run_in(call, [job], sequential=True)
                generated.extend(todo)
            after = await read(schema, row_id)
            if after is None:
                return JobRowResult({}, tuple(generated), deleted=True)
            inputs = [c.id for c in schema.columns if c.id not in targets]
            if not todo or attempt == 1 or all(
                    after.cells.get(c, Cell()).value == row.cells.get(c, Cell()).value
                    for c in inputs):
                return JobRowResult({c: after.cells.get(c) or Cell(None, CellStatus.SKIPPED)
                                     for c in targets}, tuple(generated), regenerated=regenerated)
            regenerated = True
        raise AssertionError("unreachable")  # pragma: no cover

    async def _read_row(self, schema: TableSchema, row_id: str) -> Row | None:
        try:
            row: Row = (await self.store.get_rows(schema, [row_id]))[0]
        except NotFound:
            return None
        return row

    async def _run(self, plan: TablePlan, jobs: list[_Job], *, concurrent: bool,
                   sink: EventSink | None, deadline: float | None) -> list[RowResult]:
        sequential = plan.sequential or not concurrent
        call = _Call(plan, sink, deadline, self._table_slot(plan.schema))
        return await self._run_in(call, jobs, sequential=sequential)

    async def _run_in(self, call: _Call, jobs: list[_Job], *, sequential: bool
                      ) -> list[RowResult]:
        plan, sink = call.plan, call.sink
        if not sequential:
            self._add_batchers(call, jobs)
        if sink is not None:
            for job in jobs:
                sink(RowCreated(job.index, job.row_id))
        try:
            if sequential or len(jobs) == 1:
                for job in jobs:
                    await self._run_row(call, job)
            else:
                async with asyncio.TaskGroup() as group:
                    for job in jobs:
                        group.create_task(self._run_row(call, job))
        except BaseException as exc:
            for batcher in call.batchers.values():
                batcher.cancel()
            cancelled = isinstance(exc, asyncio.CancelledError)
            message = CANCELLED_MESSAGE if cancelled else "generation stopped by an error"
            if not call.leave_unfinished:
                await self._finalize(plan.schema, jobs, message)
            if isinstance(exc, BaseExceptionGroup):
                raise _first_error(exc) from None
            raise
        results = [job.outcome or job.result(plan) for job in jobs]
        if sink is not None:
            errors = sum(1 for job in jobs for name in job.targets
                         if job.cells[name].status == CellStatus.ERROR)
            sink(Completed(len(jobs), errors))
        return results

    def _add_batchers(self, call: _Call, jobs: list[_Job]) -> None:
        for name in call.plan.order:
            executor = self.executors.get(call.plan.columns[name].column.gen_config)
            if isinstance(executor, BatchColumnExecutor):
                expected = sum(1 for job in jobs if name in job.targets)
                if expected > 1:
                    call.batchers[name] = _Batcher(executor, expected)

    async def _finalize(self, schema: TableSchema, jobs: list[_Job], message: str) -> None:
        """Write SKIPPED for every target not final; survives a second cancellation."""
        write = self._spawn(self._write_leftovers(schema, jobs, message))
        await asyncio.shield(write)

    async def _write_leftovers(self, schema: TableSchema, jobs: list[_Job], message: str) -> None:
        writes = []
        for job in jobs:
            leftover = {name: Cell(value=job.cells[name].value if job.regen else None,
                                   status=CellStatus.SKIPPED, error=message)
                        for name in job.targets if name not in job.final}
            if leftover:
                for name, cell in leftover.items():
                    job.cells[name] = cell
                writes.append(self.store.write_cells(schema, job.row_id, leftover))
        for outcome in await asyncio.gather(*writes, return_exceptions=True):
            if isinstance(outcome, BaseException):
                log.warning("could not mark cells %s: %s", message, outcome)

    async def _run_row(self, call: _Call, job: _Job) -> None:
        targets = job.targets
        if len(targets) == 1:
            await self._run_cell(call, job, targets[0], ())
        elif targets:
            tasks: dict[str, asyncio.Task[None]] = {}
            async with asyncio.TaskGroup() as group:
                for name in targets:
                    waits = [tasks[d] for d in call.plan.columns[name].deps if d in tasks]
                    tasks[name] = group.create_task(self._run_cell(call, job, name, waits))
        job.outcome = job.result(call.plan)
        if call.sink is not None:
            call.sink(RowCompleted(job.index, job.outcome))

    async def _run_cell(self, call: _Call, job: _Job, name: str,
                        waits: Sequence[asyncio.Task[None]]) -> None:
        if waits:
            # asyncio.wait, not await: a cancelled dependant must not cancel its inputs.
            await asyncio.wait(waits)
        plan = call.plan
        column_plan = plan.columns[name]
        problem = self._upstream_problem(job, column_plan)
        batcher = call.batchers.get(name)
        if problem is not None:
            if batcher is not None:
                batcher.withdraw()
            cell = _error(problem)
        else:
            run = CellRun(call.services or self, plan.schema, column_plan, job.row_id,
                          job.values, call.sink, call.deadline)
            cell = await self._execute(run, batcher, call.table_slot)
        cell = _typed(column_plan.column, cell)
        if call.tag:
            cell = dataclasses.replace(cell, job=call.tag)
        if self.metrics.enabled:
            self.metrics.cell(_KINDS.get(type(column_plan.column.gen_config), "other"),
                              _STATUSES[cell.status])
        job.finish(name, cell)  # before the write: a cancellation now must not skip it
        await self.store.write_cells(plan.schema, job.row_id, {name: cell})
        if call.sink is not None:
            call.sink(CellCompleted(job.row_id, name, cell))

    async def _execute(self, run: CellRun, batcher: _Batcher | None,
                       table_slot: asyncio.Semaphore) -> Cell:
        executor: ColumnExecutor | None = self.executors.get(run.column.gen_config)
        try:
            if executor is None:
                raise FailedPrecondition(
                    f"column {run.column.id!r}: this server cannot generate "
                    f"{type(run.column.gen_config).__name__} columns",
                    reason="NO_COLUMN_EXECUTOR")
            if batcher is not None:
                return await batcher.submit(run)
            async with table_slot:
                return await executor.run(run)
        except RowforgeError as exc:
            return _error(exc.message)
        except MissingReferenceError as exc:
            return _error(str(exc))
        except Exception:
            log.exception("column executor failed for %s.%s", run.schema.id, run.column.id)
            return _error(INTERNAL_MESSAGE)

    @staticmethod
    def _upstream_problem(job: _Job, column_plan: ColumnPlan) -> str | None:
        for dep in column_plan.deps:
            cell = job.cells.get(dep)
            if cell is None or cell.status == CellStatus.DONE:
                continue
            if cell.status == CellStatus.ERROR:
                return f"upstream column {dep!r} failed"
            return f"upstream column {dep!r} was not generated ({cell.status.value})"
        return None


#: Reads one stored row (None: it does not exist).
RowReader = Callable[[TableSchema, str], Awaitable[Row | None]]

#: Table jobs are bounded by the batch worker's limits, not the table's interactive bound.
_UNBOUNDED = asyncio.Semaphore(1 << 30)


def _written_by(cell: Cell | None, job_id: str) -> bool:
    return cell is not None and cell.job == job_id and cell.status in (CellStatus.DONE,
                                                                       CellStatus.ERROR)


def _missing(cell: Cell | None) -> bool:
    """Empty or failed: what a backfill with ``only_missing`` fills."""
    return cell is None or cell.status != CellStatus.DONE or cell.value in (None, "")


def _typed(column: ColumnSchema, cell: Cell) -> Cell:
    """The cell with its value typed for the column (a value that does not fit fails it)."""
    if cell.status != CellStatus.DONE or cell.value is None:
        return cell
    try:
        value = coerce(column.dtype, cell.value)
        if isinstance(column.gen_config, EmbedGenConfig):
            check_vector(value, column.gen_config.dimension)
    except ValueTypeError as exc:
        return Cell(value=None, status=CellStatus.ERROR, usage=cell.usage,
                    references=cell.references,
                    error=f"the generated value does not fit dtype {column.dtype}: {exc}")
    if column.dtype == EMBEDDING_DTYPE:
        return cell  # keep the list of floats the domain uses; storage packs it
    if value is not cell.value:
        return Cell(value=value, status=cell.status, error=cell.error, usage=cell.usage,
                    references=cell.references)
    return cell
