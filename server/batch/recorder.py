"""Recording outcomes of model calls, many per transaction.

SQLite has one writer, so one transaction per result would cap a batch at a few hundred
results a second and starve every other writer. Workers hand outcomes to a
:class:`ResultRecorder`, which writes whatever has accumulated (up to ``max_batch``, waiting
at most ``max_delay`` after the first) in one transaction:

1. guarded request updates: only rows this worker still leases (``lease_owner`` is us, the
   lease unexpired, the request running) change; the others are dropped silently (the job was
   cancelled, or the lease expired and another worker owns the request now);
2. per job (in id order, so concurrent recorders lock jobs in the same order): the counters
   and ``last_sequence`` move in one ``UPDATE ... RETURNING``, which hands out the result
   sequences race-free across replicas; a job whose every request ended becomes SUCCEEDED or
   FAILED in the same transaction;
3. the results are inserted (unique per job and request: a second result cannot exist).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from rowforge.server.batch.model import ErrorDetail, RequestState
from rowforge.server.batch.queue import Claim
from rowforge.server.batch.store import JOB, REQ, end_if_done
from rowforge.server.storage.batch_tables import batch_jobs, batch_requests, batch_results
from rowforge.server.storage.db import Database

log = logging.getLogger("rowforge.server.batch")

SUCCEEDED = "succeeded"
FAILED = "failed"
RETRY = "retry"


@dataclass(frozen=True)
class Outcome:
    """How one attempt ended: ``succeeded``, ``failed`` (for good) or ``retry`` at
    ``retry_at`` (epoch seconds)."""

    claim: Claim
    kind: str
    response_text: str = ""
    response_json: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = None
    error: ErrorDetail | None = None
    metadata_json: str | None = None
    retry_at: float | None = None


@dataclass(frozen=True)
class Flushed:
    """What one flush did: every outcome it handled (recorded or dropped) and the jobs whose
    results moved or that ended."""

    pks: list[int]
    recorded: int
    jobs: list[str]
    ended: list[str]
    retries: int = 0


OnFlushed = Callable[[Flushed], None]


class ResultRecorder:
    """Batches outcomes into few write transactions (see the module docstring).

    Args:
        db: The database.
        worker_id: Lease owner whose leases guard the writes.
        retention_s: Results of an ended job are kept this long.
        on_flushed: Called after each flush (also when it failed: the pks are then released
            by their leases expiring).
        flush_at / max_delay: Flush when this many outcomes wait, or this many seconds after
            the first (a flush writes at most ``max_batch``).
    """

    def __init__(self, db: Database, worker_id: str, *, retention_s: float,
                 on_flushed: OnFlushed | None = None, max_batch: int = 500,
                 max_delay: float = 0.05, flush_at: int = 64) -> None:
        self.db = db
        self.worker_id = worker_id
        self.retention_s = retention_s
        self.on_flushed = on_flushed
        self.max_batch = max_batch
        self.max_delay = max_delay
        self.flush_at = max(1, min(flush_at, max_batch))
        self._pending: list[Outcome] = []
        self._ready = asyncio.Event()  # something is pending
        self._full = asyncio.Event()  # flush_at outcomes are pending
        self._idle = asyncio.Event()  # nothing pending nor being written
        self._idle.set()
        self._task: asyncio.Task[None] | None = None

    def put(self, outcome: Outcome) -> None:
        """Queue an outcome (never blocks)."""
        self._pending.append(outcome)
        self._idle.clear()
        self._ready.set()
        if len(self._pending) >= self.flush_at:
            self._full.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="batch-recorder")

    async def drain(self) -> None:
        """Wait until everything queued so far is written."""
        await self._idle.wait()

    async def stop(self) -> None:
        """Write what is queued, then stop."""
        if self._task is None:
            return
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.drain(), 10.0)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _run(self) -> None:
        while True:
            await self._ready.wait()
            if len(self._pending) < self.flush_at:  # let a batch gather, for a while
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), self.max_delay)
            batch = self._pending[:self.max_batch]
            del self._pending[:self.max_batch]
            if len(self._pending) < self.flush_at:
                self._full.clear()
            if not self._pending:
                self._ready.clear()
            flushed = await self._flush_safely(batch)
            if not self._pending:
                self._idle.set()
            if self.on_flushed is not None:
                try:
                    self.on_flushed(flushed)
                except Exception:
                    log.exception("batch recorder callback failed")

    async def _flush_safely(self, batch: list[Outcome]) -> Flushed:
        pks = [o.claim.pk for o in batch]
        retries = sum(1 for o in batch if o.kind == RETRY)
        for attempt in range(3):
            try:
                recorded, jobs, ended = await self.write(batch)
                return Flushed(pks, recorded, jobs, ended, retries)
            except IntegrityError:
                break  # one bad outcome: write them one by one below
            except (SQLAlchemyError, OSError) as exc:  # deadlock, lost connection, ...
                log.warning("recording %d batch results failed (%s); retrying", len(batch),
                            type(getattr(exc, "orig", None) or exc).__name__)
                await asyncio.sleep(0.05 * (attempt + 1))
            except Exception:
                log.exception("recording %d batch results failed", len(batch))
                break
        recorded = 0
        job_ids: set[str] = set()
        ended_ids: set[str] = set()
        for outcome in batch:
            try:
                n, j, e = await self.write([outcome])
            except Exception:
                log.exception("could not record the result of request %r of job %s",
                              outcome.claim.request_id, outcome.claim.job_id)
                continue
            recorded += n
            job_ids.update(j)
            ended_ids.update(e)
        return Flushed(pks, recorded, sorted(job_ids), sorted(ended_ids), retries)

    async def write(self, batch: Sequence[Outcome]) -> tuple[int, list[str], list[str]]:
        """Record ``batch`` in one transaction; returns ``(results recorded, jobs with new
        results, jobs that ended)``."""
        now = time.time()
        guard = (REQ.lease_owner == self.worker_id, REQ.state == RequestState.RUNNING.value,
                 REQ.due_time > now)
        final = [o for o in batch if o.kind != RETRY]
        retries = [o for o in batch if o.kind == RETRY]
        async with self.db.write() as conn:
            if self.db.is_postgres:
                # Lock the jobs first, in id order: CancelJob also locks its job before its
                # requests, so neither can hold what the other waits for.
                job_ids = sorted({o.claim.job_id for o in final})
                if job_ids:
                    await conn.execute(sa.select(JOB.id).where(JOB.id.in_(job_ids))
                                       .order_by(JOB.id).with_for_update())
            accepted: set[int] = set()
            for kind in (SUCCEEDED, FAILED):
                pks = [o.claim.pk for o in final if o.kind == kind]
                if pks:
                    rows = await conn.execute(batch_requests.update().where(
                        REQ.id.in_(pks), *guard).values(
                        state=kind, due_time=None, lease_owner=None).returning(REQ.id))
                    accepted.update(int(pk) for pk in rows.scalars())
            for o in retries:
                await conn.execute(batch_requests.update().where(REQ.id == o.claim.pk, *guard)
                                   .values(state=RequestState.PENDING.value,
                                           due_time=o.retry_at, lease_owner=None,
                                           last_error=o.error.to_json() if o.error else None))
            by_job: dict[str, list[Outcome]] = defaultdict(list)
            for o in final:
                if o.claim.pk in accepted:
                    by_job[o.claim.job_id].append(o)
            rows_out: list[dict[str, object]] = []
            ended: list[str] = []
            for job_id in sorted(by_job):
                items = by_job[job_id]
                ok = sum(1 for o in items if o.kind == SUCCEEDED)
                cost = sum(o.cost_usd or 0.0 for o in items)
                job = (await conn.execute(batch_jobs.update().where(JOB.id == job_id).values(
                    last_sequence=JOB.last_sequence + len(items), succeeded=JOB.succeeded + ok,
                    failed=JOB.failed + (len(items) - ok),
                    input_tokens=JOB.input_tokens + sum(o.prompt_tokens for o in items),
                    output_tokens=JOB.output_tokens + sum(o.completion_tokens for o in items),
                    cost_usd=JOB.cost_usd + cost,
                ).returning(JOB.last_sequence, JOB.total_requests, JOB.succeeded, JOB.failed,
                            JOB.cancelled, JOB.state, JOB.queue_cursor))).one()
                base = int(job.last_sequence) - len(items)
                rows_out.extend(_result_row(job_id, base + i + 1, o, now)
                                for i, o in enumerate(items))
                if await end_if_done(conn, job_id, job, now, self.retention_s):
                    ended.append(job_id)
            if rows_out:
                await conn.execute(batch_results.insert(), rows_out)
        return len(rows_out), sorted(by_job), ended


def _result_row(job_id: str, sequence: int, o: Outcome, now: float) -> dict[str, object]:
    return {"job_id": job_id, "sequence": sequence, "request_id": o.claim.request_id,
            "state": o.kind, "response_text": o.response_text or None,
            "response_json": o.response_json, "prompt_tokens": o.prompt_tokens,
            "completion_tokens": o.completion_tokens, "cost_usd": o.cost_usd,
            "error": o.error.to_json() if o.error else None, "metadata": o.metadata_json,
            "attempts": o.claim.attempts, "complete_time": now}

