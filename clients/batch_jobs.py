"""``client.batch``: durable batch jobs at the level of the BatchJobService RPCs.

The AjaxAI-shaped API (``create_batch_job``, ``AjaxAiRequestItem``, callbacks ...) is built on
this in :mod:`rowforge.clients.batch`. Result and event streams resume from their last
sequence after UNAVAILABLE, so a reconnecting reader misses nothing and sees nothing twice.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from rowforge.clients import _convert as c
from rowforge.clients._transport import (
    Emit,
    Next,
    Open,
    Plan,
    Sleep,
    Transport,
    Unary,
    Upload,
    one_call,
    sync_view,
)
from rowforge.clients.exceptions import UnavailableError
from rowforge.v1 import batch_job_service_pb2 as bpb

__all__ = [
    "AddRequestsResponse",
    "BatchClient",
    "BatchRequest",
    "BatchResult",
    "ItemError",
    "Job",
    "JobEvent",
    "JobMetrics",
    "JobState",
    "RequestInfo",
    "RequestState",
]

BATCH = "BatchJobService"
MAX_REQUESTS_PER_MESSAGE = 100
#: Consecutive failed reconnects (without a single new message) before a stream gives up.
MAX_RECONNECTS = 8


class _Response(BaseModel):
    model_config = ConfigDict(extra="allow")


class JobState(StrEnum):
    """A job's state (the seed's lowercase strings)."""

    UNSPECIFIED = "unspecified"
    CREATED = "created"
    POPULATING = "populating"
    READY = "ready"
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


class RequestState(StrEnum):
    """One request's state."""

    UNSPECIFIED = "unspecified"
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


_JOB_STATES = {bpb.JobState.Value(f"JOB_STATE_{s.name}"): s for s in JobState}
_JOB_STATE_PB = {v: k for k, v in _JOB_STATES.items()}
_REQUEST_STATES = {bpb.RequestState.Value(f"REQUEST_STATE_{s.name}"): s for s in RequestState}
_EVENT_TYPES = {
    bpb.JOB_EVENT_TYPE_REQUEST_SUCCEEDED: "request_succeeded",
    bpb.JOB_EVENT_TYPE_REQUEST_FAILED: "request_failed",
    bpb.JOB_EVENT_TYPE_REQUEST_CANCELLED: "request_cancelled",
    bpb.JOB_EVENT_TYPE_STATE_CHANGED: "state_changed",
    bpb.JOB_EVENT_TYPE_PROGRESS: "progress",
}


class JobMetrics(_Response):
    """Live and final numbers of a job (the seed's ``JobPerformanceMetrics``)."""

    total_requests: int = 0
    processed_requests: int = 0
    successful_requests: int = 0
    failed_requests: int = 0
    cancelled_requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    cost_usd: float = 0.0
    duration_seconds: float = 0.0
    throughput_rps: float = 0.0
    #: Calls sent to the provider (retries and resends after a server crash included).
    provider_calls: int = 0


class Job(_Response):
    """A batch job."""

    job_id: str
    state: JobState = JobState.UNSPECIFIED
    model: str = ""
    temperature: float = 0.0
    max_output_tokens: int = 0
    system_instruction: str = ""
    job_type: str = ""
    metadata: dict[str, Any] = Field(default_factory=dict)
    max_batch_size: int = 0
    metrics: JobMetrics = Field(default_factory=JobMetrics)
    created_at: dt.datetime | None = None
    submitted_at: dt.datetime | None = None
    ended_at: dt.datetime | None = None
    expires_at: dt.datetime | None = None
    #: Requests are still being queued (a table job over all rows or a filter starts with
    #: its first rows): ``metrics.total_requests`` is not final yet.
    queuing: bool = False


class BatchRequest(_Response):
    """One request as the service stores it.

    ``content_parts`` are ``{"type": "text", "text": ...}`` or
    ``{"type": "image", "uri": ..., "content_type": ...}`` dicts.
    """

    request_id: str
    content_parts: list[dict[str, Any]] = Field(default_factory=list)
    output_schema: dict[str, Any] | None = None
    output_schema_name: str = ""
    metadata: dict[str, Any] | None = None


class ItemError(_Response):
    """Why one request failed (data, not an exception)."""

    code: str = ""
    reason: str = ""
    message: str = ""
    retryable: bool = False

    def __str__(self) -> str:
        return f"{self.message} ({self.code}: {self.reason})" if self.reason else self.message


class BatchResult(_Response):
    """The result of one request; ``sequence`` orders the job's results from 1."""

    sequence: int = 0
    request_id: str = ""
    state: RequestState = RequestState.UNSPECIFIED
    response_text: str = ""
    response_json: Any = None
    usage: dict[str, int] = Field(default_factory=dict)
    error: ItemError | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    attempts: int = 0
    completed_at: dt.datetime | None = None


class JobEvent(_Response):
    """One event of ``watch_job``: ``event_type`` is ``request_succeeded``,
    ``request_failed``, ``request_cancelled``, ``state_changed`` or ``progress``."""

    sequence: int = 0
    event_type: str = ""
    request_id: str = ""
    result: BatchResult | None = None
    state: JobState = JobState.UNSPECIFIED
    metrics: JobMetrics | None = None


class RequestInfo(_Response):
    """One request's state, attempts, result and the request itself."""

    request_id: str
    state: RequestState = RequestState.UNSPECIFIED
    attempts: int = 0
    result: BatchResult | None = None
    last_error: ItemError | None = None
    request: BatchRequest | None = None


class AddRequestsResponse(_Response):
    """Requests added by a call and in the job now."""

    added_count: int = 0
    total_requests: int = 0


# -- conversions -------------------------------------------------------------------------------

def metrics_py(m: bpb.JobMetrics) -> JobMetrics:
    return JobMetrics(**{f: getattr(m, f) for f in JobMetrics.model_fields})


def job_py(j: bpb.Job) -> Job:
    return Job(
        job_id=j.job_id, state=_JOB_STATES.get(j.state, JobState.UNSPECIFIED), model=j.model,
        temperature=round(j.temperature, 6), max_output_tokens=j.max_output_tokens,
        system_instruction=j.system_instruction, job_type=j.job_type,
        metadata=c.struct_py(j.metadata), max_batch_size=j.max_batch_size,
        metrics=metrics_py(j.metrics),
        created_at=c.datetime_of(j.create_time, j.HasField("create_time")),
        submitted_at=c.datetime_of(j.submit_time, j.HasField("submit_time")),
        ended_at=c.datetime_of(j.end_time, j.HasField("end_time")),
        expires_at=c.datetime_of(j.expire_time, j.HasField("expire_time")),
        queuing=j.queuing)


def error_py(e: Any) -> ItemError | None:
    if not (e.code or e.reason or e.message):
        return None
    return ItemError(code=e.code, reason=e.reason, message=e.message, retryable=e.retryable)


def result_py(r: bpb.BatchResult) -> BatchResult:
    return BatchResult(
        sequence=r.sequence, request_id=r.request_id,
        state=_REQUEST_STATES.get(r.state, RequestState.UNSPECIFIED),
        response_text=r.response_text,
        response_json=c.value_py(r.response_json) if r.HasField("response_json") else None,
        usage=c.usage_py(r.usage).model_dump(),
        error=error_py(r.error) if r.HasField("error") else None,
        metadata=c.struct_py(r.metadata), attempts=r.attempts,
        completed_at=c.datetime_of(r.complete_time, r.HasField("complete_time")))


def request_py(r: bpb.BatchRequest) -> BatchRequest:
    parts: list[dict[str, Any]] = []
    for p in r.content_parts:
        if p.WhichOneof("part") == "text":
            parts.append({"type": "text", "text": p.text})
        else:
            parts.append({"type": "image", "uri": p.image.uri,
                          "content_type": p.image.content_type})
    return BatchRequest(
        request_id=r.request_id, content_parts=parts,
        output_schema=c.struct_py(r.output_schema) if r.HasField("output_schema") else None,
        output_schema_name=r.output_schema_name,
        metadata=c.struct_py(r.metadata) if r.HasField("metadata") else None)


def request_pb(r: BatchRequest | Mapping[str, Any]) -> bpb.BatchRequest:
    """A request (model or dict with the :class:`BatchRequest` fields) as protobuf."""
    if not isinstance(r, BatchRequest):
        r = BatchRequest.model_validate(r)
    out = bpb.BatchRequest(request_id=r.request_id, output_schema_name=r.output_schema_name)
    for i, part in enumerate(r.content_parts):
        kind = part.get("type") or ("text" if "text" in part else "image")
        if kind == "text":
            out.content_parts.add(text=str(part.get("text", "")))
        elif kind == "image":
            uri = part.get("uri") or part.get("image") or ""
            out.content_parts.add(image=bpb.ImagePart(
                uri=str(uri), content_type=str(part.get("content_type") or "")))
        else:
            raise c.bad_argument(f"content_parts[{i}].type", "must be 'text' or 'image'")
    if r.output_schema is not None:
        out.output_schema.CopyFrom(c.struct_pb(r.output_schema))
    if r.metadata is not None:
        out.metadata.CopyFrom(c.struct_pb(r.metadata))
    return out


def event_py(e: bpb.WatchJobResponse) -> JobEvent:
    return JobEvent(
        sequence=e.sequence, event_type=_EVENT_TYPES.get(e.event_type, "unspecified"),
        request_id=e.request_id, result=result_py(e.result) if e.HasField("result") else None,
        state=_JOB_STATES.get(e.state, JobState.UNSPECIFIED),
        metrics=metrics_py(e.metrics) if e.HasField("metrics") else None)


def job_state_pb(state: JobState | str | None) -> bpb.JobState.ValueType:
    if not state:
        return bpb.JOB_STATE_UNSPECIFIED
    try:
        return _JOB_STATE_PB[JobState(str(state).lower())]
    except ValueError:
        raise c.bad_argument("state", f"unknown job state {state!r}") from None


# -- the client --------------------------------------------------------------------------------


def _resumable(open_op: Any, handle: Any, max_reconnects: int) -> Plan[None]:
    """Follow a stream, reopening it after the last sequence seen on UNAVAILABLE.

    ``open_op(cursor)`` builds the :class:`Open`; ``handle(message)`` returns
    ``(sequence or None, value to emit or None, done)``.
    """
    cursor, failures = 0, 0
    stream = yield open_op(cursor)
    while True:
        try:
            message = yield Next(stream)
        except UnavailableError as err:
            failures += 1
            if failures > max_reconnects:
                raise
            wait = min(0.2 * 2 ** (failures - 1), 5.0)
            yield Sleep(max(wait, err.retry_after or 0.0))
            stream = yield open_op(cursor)
            continue
        if message is None:
            return
        failures = 0
        sequence, value, done = handle(message)
        if sequence:
            cursor = sequence
        if value is not None:
            yield Emit(value)
        if done:
            return


class BatchClient:
    """Batch jobs over the BatchJobService RPCs. Reached as ``client.batch``."""

    def __init__(self, transport: Transport, files: Any = None) -> None:
        self._t = sync_view(transport)
        self._files = files

    def create_job(self, model: str = "", *, temperature: float | None = None,
                   max_output_tokens: int | None = None, system_instruction: str = "",
                   job_type: str = "", metadata: Mapping[str, Any] | None = None,
                   max_batch_size: int = 0, idempotency_key: str | None = None) -> Job:
        """Create a job (``model`` "" is the server's default chat model).

        A fresh ``idempotency_key`` is generated when none is given, so the call is retried
        safely on UNAVAILABLE: a retry returns the job the first attempt created.
        """
        request = bpb.CreateJobRequest(
            model=model or "", system_instruction=system_instruction, job_type=job_type,
            metadata=c.struct_pb(metadata), max_batch_size=max_batch_size,
            idempotency_key=idempotency_key or uuid.uuid4().hex)
        if temperature is not None:
            request.temperature = temperature
        if max_output_tokens is not None:
            request.max_output_tokens = max_output_tokens
        return self._t.run(one_call(Unary(BATCH, "CreateJob", request, idempotent=True),
                                  lambda r: job_py(r.job)))

    def add_requests(self, job_id: str, requests: Sequence[BatchRequest | Mapping[str, Any]]
                     ) -> AddRequestsResponse:
        """Add 1 to 100 requests to a job not yet submitted."""
        pb = bpb.AddRequestsRequest(job_id=job_id, requests=[request_pb(r) for r in requests])
        return self._t.run(one_call(Unary(BATCH, "AddRequests", pb), lambda r: AddRequestsResponse(
            added_count=r.added_count, total_requests=r.total_requests)))

    def add_many(self, job_id: str, requests: Iterable[BatchRequest | Mapping[str, Any]]
                 ) -> AddRequestsResponse:
        """Add any number of requests in one client stream (messages of up to 100)."""

        def messages() -> Iterator[bpb.StreamAddRequestsRequest]:
            batch: list[bpb.BatchRequest] = []
            for r in requests:
                batch.append(request_pb(r))
                if len(batch) == MAX_REQUESTS_PER_MESSAGE:
                    yield bpb.StreamAddRequestsRequest(job_id=job_id, requests=batch)
                    batch = []
            if batch:
                yield bpb.StreamAddRequestsRequest(job_id=job_id, requests=batch)

        return self._t.run(one_call(
            Upload(BATCH, "StreamAddRequests", messages(), deadline="call"),
            lambda r: AddRequestsResponse(added_count=r.added_count,
                                          total_requests=r.total_requests)))

    def submit_job(self, job_id: str) -> Job:
        """Start processing a job."""
        return self._t.run(one_call(Unary(BATCH, "SubmitJob", bpb.SubmitJobRequest(job_id=job_id)),
                                  lambda r: job_py(r.job)))

    def get_job(self, job_id: str) -> Job:
        """A job's state and live metrics."""
        return self._t.run(one_call(Unary(BATCH, "GetJob", bpb.GetJobRequest(job_id=job_id),
                                        idempotent=True), lambda r: job_py(r.job)))

    def list_jobs(self, offset: int = 0, limit: int = 100, state: JobState | str | None = None,
                  job_type: str = "", *, page_token: str = "") -> Any:
        """One page of jobs, newest first (a :class:`~rowforge.clients.types.Page`)."""
        from rowforge.clients.types import Page

        pb = bpb.ListJobsRequest(offset=offset, limit=limit, page_token=page_token,
                                 state=job_state_pb(state), job_type=job_type)
        return self._t.run(one_call(
            Unary(BATCH, "ListJobs", pb, idempotent=True),
            lambda r: Page[Job](items=[job_py(j) for j in r.items], offset=offset, limit=limit,
                                total=r.total, next_page_token=r.next_page_token)))

    def cancel_job(self, job_id: str) -> Job:
        """Cancel a job: in-flight calls stop, finished results stay."""
        return self._t.run(one_call(Unary(BATCH, "CancelJob", bpb.CancelJobRequest(job_id=job_id)),
                                  lambda r: job_py(r.job)))

    def get_request(self, job_id: str, request_id: str) -> RequestInfo:
        """One request's state, attempts and result."""

        def parse(r: bpb.GetRequestResponse) -> RequestInfo:
            return RequestInfo(
                request_id=r.request_id,
                state=_REQUEST_STATES.get(r.state, RequestState.UNSPECIFIED), attempts=r.attempts,
                result=result_py(r.result) if r.HasField("result") else None,
                last_error=error_py(r.last_error) if r.HasField("last_error") else None,
                request=request_py(r.request) if r.HasField("request") else None)

        return self._t.run(one_call(Unary(BATCH, "GetRequest", bpb.GetRequestRequest(
            job_id=job_id, request_id=request_id), idempotent=True), parse))

    def stream_results(self, job_id: str, cursor: int = 0, follow: bool = True, *,
                       max_reconnects: int = MAX_RECONNECTS) -> Iterator[BatchResult]:
        """Results after ``cursor``, in sequence order; with ``follow`` the stream stays open
        until the job ends. Reconnects after the last result seen on UNAVAILABLE."""
        start = cursor

        def open_op(last: int) -> Open:
            return Open(BATCH, "StreamResults", bpb.StreamResultsRequest(
                job_id=job_id, cursor=max(last, start), follow=follow), deadline="none")

        def handle(msg: bpb.StreamResultsResponse) -> tuple[int | None, Any, bool]:
            if msg.WhichOneof("event") == "result":
                return msg.result.sequence, result_py(msg.result), False
            return None, None, True

        return self._t.iterate(_resumable(open_op, handle, max_reconnects))

    def watch_job(self, job_id: str, cursor: int = 0, *,
                  max_reconnects: int = MAX_RECONNECTS) -> Iterator[JobEvent]:
        """Job events after ``cursor`` until the job ends (the terminal ``state_changed`` is
        the last). Reconnects after the last event seen on UNAVAILABLE."""
        start = cursor

        def open_op(last: int) -> Open:
            return Open(BATCH, "WatchJob", bpb.WatchJobRequest(
                job_id=job_id, cursor=max(last, start)), deadline="none")

        def handle(msg: bpb.WatchJobResponse) -> tuple[int | None, Any, bool]:
            return msg.sequence, event_py(msg), False

        return self._t.iterate(_resumable(open_op, handle, max_reconnects))
