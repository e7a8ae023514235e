"""A handle on a table job (``client.table.regen_table_rows_job`` / ``backfill_column``).

A table job is a BatchJobService job whose requests are the table's rows (request id = row
id), so the handle follows it with the batch RPCs. On the asyncio client every method of the
handle returns what the asyncio client's batch methods return: ``await job.wait()``,
``await job.cancel()``, ``async for event in job.watch()``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from rowforge.clients._transport import Open, Plan, Sleep, SyncTransport, Unary, one_call
from rowforge.clients.batch_jobs import (
    BATCH,
    MAX_RECONNECTS,
    Job,
    JobEvent,
    _resumable,
    event_py,
    job_py,
)
from rowforge.v1 import batch_job_service_pb2 as bpb

#: Seconds between GetJob polls of :meth:`TableJob.wait`.
WAIT_POLL_S = 0.5


class TableJob:
    """A running table job.

    Attributes:
        job_id: The job's id (a BatchJobService job id).
        job: The job as it was when this handle was made (see :meth:`refresh`).
    """

    def __init__(self, transport: SyncTransport, job: Job) -> None:
        self._t = transport
        self.job = job
        self.job_id = job.job_id

    def __repr__(self) -> str:
        return f"TableJob(job_id={self.job_id!r}, state={self.job.state.value!r})"

    def refresh(self) -> Job:
        """The job's state and live metrics now."""
        return self._t.run(one_call(Unary(BATCH, "GetJob", bpb.GetJobRequest(
            job_id=self.job_id), idempotent=True), lambda r: job_py(r.job)))

    def wait(self, *, poll_s: float = WAIT_POLL_S) -> Job:
        """Wait until the job ends (succeeded, failed or cancelled); returns it."""
        return self._t.run(self._wait(poll_s))

    def _wait(self, poll_s: float) -> Plan[Job]:
        while True:
            resp = yield Unary(BATCH, "GetJob", bpb.GetJobRequest(job_id=self.job_id),
                               idempotent=True)
            job = job_py(resp.job)
            if job.state.is_terminal:
                return job
            yield Sleep(poll_s)

    def watch(self, cursor: int = 0) -> Iterator[JobEvent]:
        """Events until the job ends: ``request_succeeded`` (a row done), ``request_failed``
        (a cell failed or the row was deleted; ``result.error``), ``progress`` (metrics:
        processed/total, ``throughput_rps``; see :func:`eta_seconds`), ``state_changed``."""
        start = cursor

        def open_op(last: int) -> Open:
            return Open(BATCH, "WatchJob", bpb.WatchJobRequest(
                job_id=self.job_id, cursor=max(last, start)), deadline="none")

        def handle(msg: bpb.WatchJobResponse) -> tuple[int | None, Any, bool]:
            return msg.sequence, event_py(msg), False

        return self._t.iterate(_resumable(open_op, handle, MAX_RECONNECTS))

    def cancel(self) -> Job:
        """Cancel: rows already written stay; rows not finished are left as they were."""
        return self._t.run(one_call(Unary(BATCH, "CancelJob", bpb.CancelJobRequest(
            job_id=self.job_id)), lambda r: job_py(r.job)))


def eta_seconds(job_or_metrics: Any) -> float | None:
    """Seconds left at the current rate (None before any row ended)."""
    m = getattr(job_or_metrics, "metrics", job_or_metrics)
    if m is None or not m.throughput_rps:
        return None
    return max(0.0, float(m.total_requests - m.processed_requests) / float(m.throughput_rps))
