"""The batch client's request queue: batches of ``max_batch_size``, a flush timer, retries, and
requests the server refuses reported by id instead of dropped.

Sending is serialised (one batch in flight per job, by the caller's thread or the timer's), so
a request is never sent by two threads at once. A batch leaves the queue only when the server
has it: a failed send (after :data:`SEND_ATTEMPTS` tries) keeps it queued, and the error is
raised by the next ``add_request`` / ``flush`` / ``submit``. A retry after a failure whose
outcome is unknown (UNAVAILABLE, DEADLINE_EXCEEDED) that the server answers with
DUPLICATE_REQUEST_ID means the earlier attempt landed (a batch is stored whole or not at all),
so it counts as sent, not twice.

The timer is one daemon thread per job with requests waiting, holding the job only weakly; it
ends once the queue is empty, on ``submit()`` / ``close()``, and at interpreter exit.
"""

from __future__ import annotations

import atexit
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

from rowforge.clients._convert import bad_argument
from rowforge.clients.batch.exceptions import InvalidBatchRequestsError
from rowforge.clients.exceptions import (
    AlreadyExistsError,
    DeadlineExceededError,
    InvalidArgumentError,
    RateLimitError,
    RowForgeError,
    UnavailableError,
)

if TYPE_CHECKING:
    from rowforge.clients.batch._job import AjaxAiBatchJob, AjaxAiRequestItem

#: The seed: queued requests go out "when the batch size limit is reached or after a timeout".
DEFAULT_FLUSH_INTERVAL_S = 2.0
#: Tries of one batch before its error is reported (the requests stay queued).
SEND_ATTEMPTS = 3
RETRY_BASE_S = 0.2

_UNKNOWN_OUTCOME = (UnavailableError, DeadlineExceededError)
_timers: weakref.WeakSet[_Timer] = weakref.WeakSet()


class _Timer(threading.Thread):
    """Sends a job's partial batch once its oldest request has waited the flush interval."""

    def __init__(self, queue: _Queue) -> None:
        super().__init__(name="rowforge-batch-flush", daemon=True)
        self._queue = weakref.ref(queue)
        self.stopped = threading.Event()
        _timers.add(self)

    def run(self) -> None:
        while not self.stopped.is_set():
            queue = self._queue()
            if queue is None:
                return
            wait = queue.due_in()
            if wait is None:  # nothing queued: end; the next add starts a new timer
                if queue.retire(self):
                    return
                continue
            del queue  # hold the job only weakly while waiting
            if wait > 0:
                self.stopped.wait(wait)
                continue
            queue = self._queue()
            if queue is None or self.stopped.is_set():
                return
            queue.flush_in_background()


@atexit.register
def _stop_timers() -> None:
    for timer in list(_timers):
        timer.stopped.set()


class _Queue:
    """Requests of one job waiting to be sent (see the module docstring)."""

    def __init__(self, job: AjaxAiBatchJob) -> None:
        self._job = weakref.ref(job)
        self._pending: list[AjaxAiRequestItem] = []
        self._ids: set[str] = set()  # queued or accepted by the server
        self._oldest: float | None = None  # when the oldest queued request was added
        self._failure: RowForgeError | None = None  # to raise on the next call
        self._lock = threading.Lock()  # the state above
        self._sending = threading.Lock()  # one send at a time
        self._timer: _Timer | None = None
        self._stopped = False

    # -- caller side -----------------------------------------------------------------------

    def add(self, item: AjaxAiRequestItem) -> Any:
        """Queue ``item``; returns the server's reply when this call sent a full batch."""
        if not item.content_parts:
            raise bad_argument(f"requests[{item.request_id}].content_parts",
                               "add text or an image first")
        with self._lock:
            self._raise_failure()
            if item.request_id in self._ids:
                raise bad_argument("request_id", f"{item.request_id!r} is already queued or "
                                                 "sent in this job")
            self._pending.append(item)
            self._ids.add(item.request_id)
            if self._oldest is None:
                self._oldest = time.monotonic()
            full = len(self._pending) >= self._batch_size()
            if not full:
                self._start_timer()
                return None
        return self._send(only_full=True)

    def flush(self) -> int:
        """Send everything queued; returns how many requests the server accepted."""
        with self._lock:
            self._raise_failure()
        reply = self._send(only_full=False)
        return reply.accepted if reply is not None else 0

    def stop(self) -> None:
        """No more timer (``submit`` / ``close``)."""
        with self._lock:
            self._stopped = True
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.stopped.set()
            if timer is not threading.current_thread():
                timer.join(5)

    # -- timer side ------------------------------------------------------------------------

    def due_in(self) -> float | None:
        with self._lock:
            if self._oldest is None or self._stopped:
                return None
            job = self._job()
            interval = job.flush_interval_s if job is not None else 0.0
            return self._oldest + interval - time.monotonic()

    def retire(self, timer: _Timer) -> bool:
        """The timer ends if nothing is queued (checked under the lock add() takes)."""
        with self._lock:
            if self._oldest is not None and not self._stopped:
                return False
            if self._timer is timer:
                self._timer = None
            return True

    def flush_in_background(self) -> None:
        try:
            self._send(only_full=False)
        except RowForgeError as err:  # kept for the next call; the requests stay queued
            with self._lock:
                if self._failure is None or isinstance(err, InvalidBatchRequestsError):
                    self._failure = _merge(self._failure, err)
                if self._pending:  # try again after another interval
                    self._oldest = time.monotonic()

    # -- sending ---------------------------------------------------------------------------

    def _send(self, *, only_full: bool) -> _Reply | None:
        """Send queued batches (only full ones with ``only_full``) in order.

        Raises:
            InvalidBatchRequestsError: after the valid requests were sent.
            RowForgeError: a batch could not be sent (it stays queued, first in line).
        """
        reply: _Reply | None = None
        refused: InvalidBatchRequestsError | None = None
        with self._sending:
            while True:
                with self._lock:
                    size = self._batch_size()
                    batch = self._pending[:size]
                    if not batch or (only_full and len(batch) < size):
                        break
                outcome = self._send_batch(batch)  # raises: the batch stays queued
                with self._lock:
                    del self._pending[:len(batch)]
                    self._ids.difference_update(outcome.refused)  # may be added again, fixed
                    self._oldest = time.monotonic() if self._pending else None
                reply = outcome if reply is None else reply.merge(outcome)
                if outcome.error is not None:
                    refused = _merge(refused, outcome.error)  # type: ignore[assignment]
        if refused is not None:
            raise refused
        return reply

    def _send_batch(self, batch: list[AjaxAiRequestItem]) -> _Reply:
        job = self._job()
        if job is None:
            raise RuntimeError("the batch job is gone")
        refused: dict[str, RowForgeError] = {}
        entries = []
        for item in batch:
            try:
                entries.append((item, item.to_request(job._upload)))
            except InvalidArgumentError as err:  # found here: no content, a bad image path
                refused[item.request_id] = err
            except OSError as exc:  # a local image that cannot be read
                refused[item.request_id] = bad_argument(
                    f"requests[{item.request_id}].content_parts.image", str(exc))
        reply = _Reply()
        attempt = 0
        unknown = False
        while entries:
            try:
                sent = job.client.batch.add_requests(job.job_id, [r for _, r in entries])
            except InvalidArgumentError as err:
                indexes = _invalid_indexes(err, len(entries))
                if not indexes:
                    raise  # not about single requests (e.g. the job was submitted)
                for i in sorted(indexes, reverse=True):
                    item, _ = entries.pop(i)
                    refused[item.request_id] = err
                continue
            except AlreadyExistsError as err:
                rid = err.metadata.get("requestId", "")
                if unknown:  # our earlier attempt landed (batches are stored whole)
                    reply.accepted += len(entries)
                    break
                bad = [i for i, (item, _) in enumerate(entries) if item.request_id == rid]
                if not bad:
                    raise
                item, _ = entries.pop(bad[0])
                refused[item.request_id] = err
                continue
            except (*_UNKNOWN_OUTCOME, RateLimitError) as err:
                attempt += 1
                unknown = unknown or isinstance(err, _UNKNOWN_OUTCOME)
                if attempt >= SEND_ATTEMPTS:
                    raise
                time.sleep(max(err.retry_after or 0.0, RETRY_BASE_S * 2 ** (attempt - 1)))
                continue
            reply.accepted += len(entries)
            reply.added_count += sent.added_count
            reply.total_requests = sent.total_requests
            break
        reply.refused = list(refused)
        if refused:
            reply.error = InvalidBatchRequestsError.of(refused)
        return reply

    # -- helpers ---------------------------------------------------------------------------

    def _batch_size(self) -> int:
        job = self._job()
        return job.max_batch_size if job is not None else 1

    def _start_timer(self) -> None:
        if self._stopped or (self._timer is not None and self._timer.is_alive()):
            return
        self._timer = _Timer(self)
        self._timer.start()

    def _raise_failure(self) -> None:
        failure, self._failure = self._failure, None
        if failure is not None:
            raise failure


class _Reply:
    """What sending one or more batches came to."""

    def __init__(self) -> None:
        self.accepted = 0
        self.added_count = 0
        self.total_requests = 0
        self.refused: list[str] = []
        self.error: InvalidBatchRequestsError | None = None

    def merge(self, other: _Reply) -> _Reply:
        self.accepted += other.accepted
        self.added_count += other.added_count
        self.total_requests = other.total_requests or self.total_requests
        self.refused += other.refused
        return self


def _invalid_indexes(err: RowForgeError, count: int) -> list[int]:
    """The requests a refusal names (``invalidRequestMask``: hex, bit i = request i)."""
    try:
        mask = int(err.metadata.get("invalidRequestMask", "0"), 16)
    except ValueError:
        return []
    return [i for i in range(count) if mask >> i & 1]


def _merge(first: RowForgeError | None, second: RowForgeError) -> RowForgeError:
    if isinstance(first, InvalidBatchRequestsError) and isinstance(
            second, InvalidBatchRequestsError):
        return InvalidBatchRequestsError.of({**first.errors, **second.errors})
    return second if first is None else first
