"""Table jobs on the batch machinery: a job whose requests are rows of a table.

A table job is an ordinary batch job (same tables, queue, leases, recorder, events, cancel)
whose ``job_type`` starts with :data:`TABLE_JOB_PREFIX` and whose requests are named by row
id. When the worker claims such a request it does not call a model itself: it hands the row
to a :class:`TableRowRunner` (the tables domain, wired by ``server/app.py``) together with a
:class:`JobGate`, through which every model call of the row's cells passes. The gate is the
batch path's admission for one call: the model's :class:`ModelLimiter` (rpm/tpm buckets,
``Retry-After`` pauses, adaptive concurrency), the worker's global call slots, the durable
call log, and retries of transient errors with backoff. Calls of interactive requests
(StreamAddRows, RegenRows) never pass a gate, so they do not queue behind a job.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from rowforge.server import providers
from rowforge.server.batch.call_log import CallLog
from rowforge.server.batch.calls import prepare
from rowforge.server.batch.model import ErrorDetail
from rowforge.server.batch.ratelimit import Limiters
from rowforge.server.errors import ResourceExhausted, RowforgeError
from rowforge.server.providers import ModelSpec
from rowforge.server.quotas import QuotaExceeded

T = TypeVar("T")

#: ``job_type`` of table jobs: ``rowforge.table/<table_type>/<table_id>`` (ListJobs filters
#: on it). Callers cannot create batch jobs with this prefix.
TABLE_JOB_PREFIX = "rowforge.table/"


def table_job_type(table_type: str, table_id: str) -> str:
    return f"{TABLE_JOB_PREFIX}{table_type}/{table_id}"


def is_table_job(job_type: str) -> bool:
    return job_type.startswith(TABLE_JOB_PREFIX)


@dataclass(frozen=True)
class RowOutcome:
    """How one row of a table job ended.

    ``ok`` False with ``error`` is a failed result (a cell failed, the row was deleted);
    ``summary_json`` becomes the result's ``response_text``.
    """

    ok: bool
    summary_json: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: ErrorDetail | None = None


class TableRowRunner(Protocol):
    """Generates one row of a table job (the tables domain's ``TableJobs``)."""

    async def run_row(self, project_id: str, job_id: str, params: dict[str, Any],
                      row_id: str, gate: JobGate) -> RowOutcome: ...


class JobGate:
    """Admits the model calls of one table job's row (see the module docstring).

    Args:
        job_id: The job (its provider calls are counted in the call log).
        limiters / slots / calls: The worker's per-model limiters, global call slots and
            call log.
        max_attempts / backoff_base / backoff_max: Retries of transient errors (429, 5xx,
            timeouts): waits grow exponentially with full jitter, never below ``Retry-After``.
    """

    def __init__(self, job_id: str, *, limiters: Limiters, slots: asyncio.Semaphore,
                 calls: CallLog, max_attempts: int, backoff_base: float,
                 backoff_max: float) -> None:
        self.job_id = job_id
        self.limiters = limiters
        self.slots = slots
        self.calls = calls
        self.max_attempts = max(1, max_attempts)
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        #: Cost of the calls that succeeded through this gate (where the price is known).
        self.cost_usd = 0.0

    async def call(self, spec: ModelSpec, estimate_tokens: int,
                   fn: Callable[[], Awaitable[T]]) -> T:
        """``fn()`` (one provider call) under the model's limits, retried while transient.

        Raises:
            The last error of ``fn`` (the cell then fails with it).
        """
        limiter = self.limiters.for_model(spec)
        estimate = estimate_tokens if limiter.tokens is not None else 0
        attempt = 0
        while True:
            attempt += 1
            await prepare(spec)
            # counted while waiting for a slot (bench_table_jobs: 1.23x -> 1.13x ideal)
            permit = await self.calls.admitted(
                self.job_id, lambda: limiter.acquire(estimate, slots=self.slots))
            try:
                result = await fn()
            except BaseException as exc:
                throttled = isinstance(exc, ResourceExhausted) \
                    and not isinstance(exc, QuotaExceeded)
                retry_after = getattr(exc, "retry_after", None)
                limiter.release(permit, throttled=throttled,
                                retry_after=retry_after if throttled else None)
                if not (isinstance(exc, RowforgeError) and providers.is_retryable(exc)
                        and attempt < self.max_attempts):
                    raise
                delay = providers.backoff_delay(attempt, base_delay=self.backoff_base,
                                                max_delay=self.backoff_max, jitter=True,
                                                rng=random.random)
                await asyncio.sleep(max(delay, retry_after or 0.0))
                continue
            self.cost_usd += float(getattr(result, "cost_usd", None) or 0.0)
            usage = getattr(result, "usage", None)
            limiter.release(permit, succeeded=True,
                            used_tokens=getattr(usage, "total_tokens", None))
            return result
