"""StreamResults and WatchJob: results and events after a cursor, following the job live.

Results are numbered 1, 2, ... per job with no gaps; a client that reconnects with the last
sequence it saw gets exactly the rest. WatchJob interleaves the same results (as request
events, under the same sequences) with the job's state changes, each delivered right after
the result that preceded it (``after_sequence``; every state change but the terminal one comes
before the first result), plus coalesced PROGRESS events. The terminal STATE_CHANGED event
always ends the stream, whatever the cursor.

Each round reads the job, then the events, then the results: a job seen terminal has all its
results committed (the last result and the terminal state are one transaction), so nothing
is missed between the reads. Followers wake on in-process notifications and otherwise poll
(results recorded by another replica).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from rowforge.server.batch.model import (
    REQUEST_EVENTS,
    EventType,
    Job,
    Result,
    StateEvent,
    WatchEvent,
)
from rowforge.server.batch.signals import JobSignals
from rowforge.server.batch.store import BatchStore
from rowforge.server.errors import FailedPrecondition, InvalidArgument

PAGE = 1000
POLL_S = 0.5
PROGRESS_EVERY_S = 0.25


def _check_cursor(cursor: int) -> None:
    if cursor < 0:
        raise InvalidArgument.field("cursor", "must not be negative (0: from the start)")


def _expired(job: Job) -> FailedPrecondition:
    return FailedPrecondition(
        f"the results of batch job {job.id!r} expired and were purged", reason="RESULTS_EXPIRED",
        metadata={"jobId": job.id}, resource_type="batch_job", resource_name=job.id)


async def stream_results(store: BatchStore, signals: JobSignals, project_id: str, job_id: str,
                         cursor: int = 0, *, follow: bool = True, page: int = PAGE,
                         poll_s: float = POLL_S) -> AsyncIterator[Result | Job]:
    """Results with sequence > ``cursor``, then the job (terminal, or as it is now when not
    following).

    Raises:
        InvalidArgument: negative cursor. NotFound: unknown job.
        FailedPrecondition: ``RESULTS_EXPIRED`` once the retention purged them.
    """
    _check_cursor(cursor)
    job = await store.get_job(project_id, job_id)
    if job.purged and cursor < job.last_sequence:
        raise _expired(job)
    while True:
        job = await store.get_job(project_id, job_id)
        results = await store.results_after(job_id, cursor, page)
        for result in results:
            yield result
            cursor = result.sequence
        if len(results) >= page:
            continue
        if job.state.is_terminal or not follow:
            yield await store.get_job(project_id, job_id)
            return
        await signals.wait(job_id, poll_s)


async def watch_job(store: BatchStore, signals: JobSignals, project_id: str, job_id: str,
                    cursor: int = 0, *, page: int = PAGE, poll_s: float = POLL_S,
                    progress_every: float = PROGRESS_EVERY_S) -> AsyncIterator[WatchEvent]:
    """Events with sequence > ``cursor`` until the terminal state change (see the module
    docstring).

    Raises:
        InvalidArgument: negative cursor. NotFound: unknown job.
        FailedPrecondition: ``RESULTS_EXPIRED`` when purged results would be needed.
    """
    _check_cursor(cursor)
    job = await store.get_job(project_id, job_id)
    if job.purged and cursor < job.last_sequence:
        raise _expired(job)
    start = cursor
    delivered = 0  # state events consumed, in order
    last_progress = time.monotonic()
    while True:
        job = await store.get_job(project_id, job_id)
        events = await store.state_events(job_id)
        if delivered == 0 and start > 0:  # the client saw the changes up to its cursor
            while delivered < len(events) and not events[delivered].state.is_terminal \
                    and events[delivered].after_sequence <= start:
                delivered += 1
        results = await store.results_after(job_id, cursor, page)
        for result in results:
            while delivered < len(events) and not events[delivered].state.is_terminal \
                    and events[delivered].after_sequence < result.sequence:
                yield _state_event(events[delivered], job)
                delivered += 1
            yield WatchEvent(sequence=result.sequence, type=REQUEST_EVENTS[result.state],
                             state=job.state, request_id=result.request_id, result=result)
            cursor = result.sequence
        while delivered < len(events) and not events[delivered].state.is_terminal:
            yield _state_event(events[delivered], job)
            delivered += 1
        if results and time.monotonic() - last_progress >= progress_every:
            last_progress = time.monotonic()
            now = await store.get_job(project_id, job_id)
            yield WatchEvent(sequence=cursor, type=EventType.PROGRESS, state=now.state,
                             metrics=now.metrics)
        if len(results) >= page:
            continue
        if job.state.is_terminal:
            final = await store.get_job(project_id, job_id)
            yield WatchEvent(sequence=final.last_sequence, type=EventType.STATE_CHANGED,
                             state=final.state, metrics=final.metrics)
            return
        await signals.wait(job_id, poll_s)


def _state_event(event: StateEvent, job: Job) -> WatchEvent:
    return WatchEvent(sequence=event.after_sequence, type=EventType.STATE_CHANGED,
                      state=event.state, metrics=job.metrics)
