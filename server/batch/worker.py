"""The batch worker of one process: claims due requests, calls their models under the rate
limits, retries what may succeed later, and hands every outcome to the recorder.

Retries live here and only here (providers never retry): a retryable failure (429, 5xx,
timeout, connection error, output failing the schema) goes back to the queue, due after an
exponential backoff with full jitter but never before the provider's ``Retry-After``; after
``batch_max_attempts`` attempts the request fails with its last error. Putting the retry in
the database (not in a sleeping task) means a retry survives a restart and may run on any
replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import random
import time
from collections import defaultdict

from sqlalchemy.exc import SQLAlchemyError

from rowforge.server import providers
from rowforge.server.auth import reset_current_project, set_current_project
from rowforge.server.batch.call_log import CallLog
from rowforge.server.batch.calls import (
    FileReader,
    build_messages,
    complete,
    prepare,
    response_format,
)
from rowforge.server.batch.model import ErrorDetail
from rowforge.server.batch.queue import Claim, JobInfo, Payload, WorkQueue
from rowforge.server.batch.ratelimit import Limiters, ModelLimiter
from rowforge.server.batch.recorder import (
    FAILED,
    RETRY,
    SUCCEEDED,
    Flushed,
    Outcome,
    ResultRecorder,
)
from rowforge.server.batch.signals import JobSignals
from rowforge.server.batch.store import DAY_S
from rowforge.server.batch.table_rows import JobGate, TableRowRunner, is_table_job
from rowforge.server.config import Settings
from rowforge.server.errors import Internal, ResourceExhausted, RowforgeError, Unavailable
from rowforge.server.files.store import FileStore
from rowforge.server.metrics import DISABLED, Metrics
from rowforge.server.providers import ModelRegistry
from rowforge.server.quotas import QuotaExceeded
from rowforge.server.storage.db import Database

log = logging.getLogger("rowforge.server.batch")

#: Payloads up to this many characters are loaded with their claim; larger ones (up to 32 MB)
#: only when their call starts, a few at a time, so buffered work stays small in memory.
INLINE_PAYLOAD_CHARS = 256 * 1024
LARGE_PAYLOADS_AT_ONCE = 4
MAX_CLAIM = 256
MAX_CACHED_JOBS = 4096
POLL_S = 1.0


class BatchWorker:
    """Processes batch requests of every job, with leases shared with other replicas.

    Args:
        db: The database.
        models: The model registry.
        settings: ``batch_workers`` (calls in flight, and the adaptive limit's ceiling),
            ``batch_max_attempts``, ``batch_lease_s``, ``batch_retention_days``,
            ``batch_request_timeout_s``, ``batch_backoff_base_s`` / ``batch_backoff_max_s``.
        worker_id: Lease owner name of this process.
        signals: Notified when a job's results or state move.
        files: The file store, for ``file://`` images (None: such requests fail).
    """

    def __init__(self, db: Database, models: ModelRegistry, settings: Settings, *,
                 worker_id: str, signals: JobSignals,
                 files: FileStore | None = None, metrics: Metrics = DISABLED) -> None:
        self.models = models
        #: Generates the rows of table jobs (set by the composition root; None: their
        #: requests fail TABLE_JOBS_UNAVAILABLE).
        self.table_rows: TableRowRunner | None = None
        self.metrics = metrics
        self.signals = signals
        self.files = files
        self.concurrency = max(1, settings.batch_workers)
        self.capacity = 2 * self.concurrency  # leased requests: in flight plus a buffer
        self.max_attempts = max(1, settings.batch_max_attempts)
        self.lease_s = settings.batch_lease_s
        self.timeout = settings.batch_request_timeout_s
        self.backoff_base = settings.batch_backoff_base_s
        self.backoff_max = settings.batch_backoff_max_s
        self.max_image_bytes = settings.max_image_bytes
        self.queue = WorkQueue(db, worker_id, settings.batch_lease_s)
        self.recorder = ResultRecorder(db, worker_id,
                                       retention_s=settings.batch_retention_days * DAY_S,
                                       on_flushed=self._flushed,
                                       flush_at=max(1, self.concurrency // 2))
        self.limiters = Limiters(self.concurrency)
        self.calls = CallLog(db)
        self._slots = asyncio.Semaphore(self.concurrency)
        self._large = asyncio.Semaphore(LARGE_PAYLOADS_AT_ONCE)
        self._held: set[int] = set()
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._by_job: dict[str, set[int]] = defaultdict(set)
        self._jobs: dict[str, JobInfo] = {}
        self._wake = asyncio.Event()
        self._loops: list[asyncio.Task[None]] = []
        self._stopping = False

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Take back leases a previous process with this worker id held, then start."""
        released = await self.queue.release(None)
        if released:
            log.info("released %d batch leases of a previous run", released)
        self.recorder.start()
        self._loops = [asyncio.create_task(self._claim_loop(), name="batch-claims"),
                       asyncio.create_task(self._heartbeat_loop(), name="batch-heartbeat")]

    async def stop(self) -> None:
        """Stop calling models, record what finished, give the other leases back."""
        self._stopping = True
        for task in self._loops:
            task.cancel()
        running = list(self._tasks.values())
        for task in running:
            task.cancel()
        await asyncio.gather(*self._loops, *running, return_exceptions=True)
        self._loops = []
        await self.recorder.stop()
        with contextlib.suppress(SQLAlchemyError, OSError):
            await self.queue.release(sorted(self._held))
        self._held.clear()

    def wake(self) -> None:
        """Look for work now (a job was submitted)."""
        self._wake.set()

    async def take_over(self, worker_id: str) -> int:
        """Give back the leases of a dead replica ``worker_id`` (due at once, the interrupted
        attempt not counted), and look for work now; returns how many."""
        released = await WorkQueue(self.queue.db, worker_id, self.queue.lease_s).release(None)
        if released:
            log.info("re-queued %d batch requests leased by dead replica %s", released,
                     worker_id)
            self.wake()
        return released

    def cancel_job(self, job_id: str) -> None:
        """Stop this process's calls for a cancelled job (its leases are already gone)."""
        for pk in list(self._by_job.pop(job_id, ())):
            self._held.discard(pk)
            task = self._tasks.get(pk)
            if task is not None:
                task.cancel()
        self._jobs.pop(job_id, None)

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    # --- claiming --------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        while True:
            self._wake.clear()
            timeout = POLL_S
            room = self.capacity - len(self._held)
            # claim in batches of at least half the concurrency: fewer, larger transactions
            if room >= max(1, self.concurrency // 2) or (room > 0 and not self._held):
                wanted = min(room, MAX_CLAIM)
                try:
                    claims, started = await self.queue.claim(wanted)
                    for job_id in started:
                        self.signals.notify(job_id)
                    if claims:
                        await self._dispatch(claims)
                    if len(claims) == wanted:
                        continue
                    timeout = await self._until_next_due()
                except Exception:  # the database is down, or a bug: never stop claiming
                    log.exception("claiming batch requests failed; retrying in %ss", POLL_S)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def _until_next_due(self) -> float:
        due = await self.queue.next_due()
        if due is None:
            return POLL_S
        return min(POLL_S, max(0.01, due - time.time()))

    async def _dispatch(self, claims: list[Claim]) -> None:
        pks = [c.pk for c in claims]
        self._held.update(pks)
        try:
            missing = {c.job_id for c in claims} - self._jobs.keys()
            if missing and len(self._jobs) > MAX_CACHED_JOBS:  # jobs other replicas ended
                self._jobs.clear()
                missing = {c.job_id for c in claims}
            if missing:
                self._jobs.update(await self.queue.jobs(missing))
            payloads = await self.queue.payloads(pks, max_size=INLINE_PAYLOAD_CHARS)
        except BaseException:
            # not heartbeated any more: the leases expire and the requests are claimed again
            self._held.difference_update(pks)
            raise
        for claim in claims:
            job = self._jobs.get(claim.job_id)
            if job is None:  # cannot happen while jobs are never deleted
                self._held.discard(claim.pk)
                continue
            task = asyncio.create_task(self._run(claim, job, payloads.get(claim.pk)))
            self._tasks[claim.pk] = task
            self._by_job[claim.job_id].add(claim.pk)
            task.add_done_callback(functools.partial(self._done, claim))

    def _done(self, claim: Claim, task: asyncio.Task[None]) -> None:
        if self._tasks.get(claim.pk) is task:
            del self._tasks[claim.pk]
        pks = self._by_job.get(claim.job_id)
        if pks is not None:
            pks.discard(claim.pk)
            if not pks:
                del self._by_job[claim.job_id]
        if not task.cancelled() and task.exception() is not None:
            log.error("batch task of request %r failed", claim.request_id,
                      exc_info=task.exception())

    def _flushed(self, flushed: Flushed) -> None:
        self.metrics.batch_flushed(flushed.recorded, flushed.retries)
        for pk in flushed.pks:
            self._held.discard(pk)
        for job_id in flushed.jobs:
            self.signals.notify(job_id)
        for job_id in flushed.ended:
            self._jobs.pop(job_id, None)
        if not self._stopping:
            room = self.capacity - len(self._held)
            if flushed.retries or room >= max(1, self.concurrency // 2):
                self._wake.set()

    # --- heartbeats ------------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            held = set(self._held)
            if not held:
                continue
            try:
                kept = await self.queue.heartbeat(held)
            except Exception:
                log.exception("extending batch leases failed")
                continue
            for pk in held - kept:
                if pk in self._held:  # not recorded meanwhile: lost (cancelled or taken)
                    self._held.discard(pk)
                    task = self._tasks.get(pk)
                    if task is not None:
                        task.cancel()

    # --- one request -----------------------------------------------------------------------

    async def _run(self, claim: Claim, job: JobInfo, payload: Payload | None) -> None:
        try:
            if payload is None:
                async with self._large:
                    payload = await self.queue.payload(claim.pk)
                    if payload is None:  # gone (purged): nothing to call, nothing to record
                        self._held.discard(claim.pk)
                        return
                    outcome = await self._attempt(claim, job, payload)
            else:
                outcome = await self._attempt(claim, job, payload)
        except Exception:
            self._held.discard(claim.pk)  # the lease expires: another attempt, later
            raise
        self.recorder.put(outcome)

    async def _attempt(self, claim: Claim, job: JobInfo, payload: Payload) -> Outcome:
        if is_table_job(job.config.job_type):
            return await self._table_row(claim, job, payload)
        config = job.config
        limiter: ModelLimiter | None = None
        # The job's project is charged for the call (its provider_tokens_per_day quota).
        project = set_current_project(job.project_id)
        try:
            spec = self.models.get(config.model)
            limiter = self.limiters.for_model(spec)
            messages = await build_messages(config, payload.request,
                                            self._file_reader(job.project_id))
            fmt = response_format(payload.request)
            estimate = 0
            if limiter.tokens is not None:
                estimate = providers.estimate_tokens(messages) + config.max_output_tokens
            await prepare(spec)
            # counted before it can be paid for, while waiting for a slot (bench_batch:
            # 1.08x -> 1.04x ideal)
            permit = await self.calls.admitted(
                claim.job_id, functools.partial(limiter.acquire, estimate, slots=self._slots))
            try:
                result = await complete(spec, messages, temperature=config.temperature,
                                        max_tokens=config.max_output_tokens,
                                        response_format=fmt, timeout=self.timeout)
            except BaseException as exc:
                # The provider's 429, not the project's own quota, slows the model down.
                throttled = isinstance(exc, ResourceExhausted) \
                    and not isinstance(exc, QuotaExceeded)
                limiter.release(permit, throttled=throttled,
                                retry_after=getattr(exc, "retry_after", None)
                                if throttled else None)
                raise
            limiter.release(permit, used_tokens=result.usage.total_tokens, succeeded=True)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return self._failure(claim, payload, exc)
        finally:
            reset_current_project(project)
        return Outcome(
            claim, SUCCEEDED, response_text=result.text,
            response_json=json.dumps(result.parsed, ensure_ascii=False)
            if fmt is not None else None,
            prompt_tokens=result.usage.prompt_tokens,
            completion_tokens=result.usage.completion_tokens, cost_usd=result.cost_usd,
            metadata_json=payload.metadata_json)

    async def _table_row(self, claim: Claim, job: JobInfo, payload: Payload) -> Outcome:
        """One row of a table job: the tables domain generates it, its model calls passing
        through a :class:`JobGate` (this worker's limiters, slots and call log)."""
        project = set_current_project(job.project_id)
        try:
            if self.table_rows is None:
                raise Unavailable("This server cannot run table jobs.",
                                  reason="TABLE_JOBS_UNAVAILABLE")
            gate = JobGate(claim.job_id, limiters=self.limiters, slots=self._slots,
                           calls=self.calls, max_attempts=self.max_attempts,
                           backoff_base=self.backoff_base, backoff_max=self.backoff_max)
            row = await self.table_rows.run_row(job.project_id, claim.job_id,
                                                dict(job.config.metadata or {}),
                                                claim.request_id, gate)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return self._failure(claim, payload, exc)
        finally:
            reset_current_project(project)
        return Outcome(claim, SUCCEEDED if row.ok else FAILED, response_text=row.summary_json,
                       prompt_tokens=row.prompt_tokens, completion_tokens=row.completion_tokens,
                       cost_usd=gate.cost_usd or None, error=row.error,
                       metadata_json=payload.metadata_json)

    def _failure(self, claim: Claim, payload: Payload, exc: Exception) -> Outcome:
        if isinstance(exc, RowforgeError):
            error = exc
        elif isinstance(exc, SQLAlchemyError | OSError):  # e.g. reading an image file
            error = Unavailable("The server could not read the request's input; retrying.",
                                reason="STORAGE_UNAVAILABLE")
        else:
            log.error("batch request %r of job %s failed unexpectedly", claim.request_id,
                      claim.job_id, exc_info=exc)
            error = Internal("The request failed unexpectedly on the server.",
                             reason="INTERNAL")
        retryable = providers.is_retryable(error)
        detail = ErrorDetail(code=error.code, reason=error.reason, message=error.message,
                             retryable=retryable)
        if retryable and claim.attempts < self.max_attempts:
            delay = providers.backoff_delay(claim.attempts, base_delay=self.backoff_base,
                                            max_delay=self.backoff_max, jitter=True,
                                            rng=random.random)
            if error.retry_after is not None:
                delay = max(delay, error.retry_after)
            return Outcome(claim, RETRY, error=detail, retry_at=time.time() + delay)
        return Outcome(claim, FAILED, error=detail, metadata_json=payload.metadata_json)

    def _file_reader(self, project_id: str) -> FileReader | None:
        files = self.files
        if files is None:
            return None
        limit = self.max_image_bytes

        async def read(uri: str) -> tuple[bytes, str]:
            info = await files.get(project_id, uri)
            return await files.read_bytes(project_id, uri, max_bytes=limit), info.content_type

        return read
