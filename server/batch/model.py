"""The batch domain's plain data: jobs, requests, results and events (no protobuf, no SQL)."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import Any


class JobState(enum.StrEnum):
    """Lifecycle of a job (see ``batch_job_service.proto`` for the transitions)."""

    CREATED = "created"
    POPULATING = "populating"
    READY = "ready"
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_JOB_STATES


TERMINAL_JOB_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})


class RequestState(enum.StrEnum):
    """Lifecycle of one request."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class JobConfig:
    """What CreateJob fixes for every request of a job."""

    model: str
    temperature: float = 0.5
    max_output_tokens: int = 1024
    system_instruction: str = ""
    job_type: str = ""
    metadata: dict[str, Any] | None = None
    max_batch_size: int = 20


@dataclass(frozen=True)
class JobMetrics:
    """Live and final numbers of a job."""

    total_requests: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    duration_seconds: float = 0.0
    #: Calls sent to the provider (attempts and resends after a crash included).
    provider_calls: int = 0

    @property
    def processed(self) -> int:
        return self.succeeded + self.failed + self.cancelled

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def throughput_rps(self) -> float:
        """Requests that ran to an end (succeeded or failed) per second of processing."""
        done = self.succeeded + self.failed
        return done / self.duration_seconds if self.duration_seconds > 0 else 0.0


@dataclass(frozen=True)
class Job:
    """A batch job as callers see it."""

    id: str
    project_id: str
    state: JobState
    config: JobConfig
    metrics: JobMetrics
    create_time: float
    submit_time: float | None = None
    start_time: float | None = None
    end_time: float | None = None
    expire_time: float | None = None
    purged: bool = False
    last_sequence: int = 0
    #: Requests are still being queued in the background (``total_requests`` grows).
    queuing: bool = False


@dataclass(frozen=True)
class ContentPart:
    """Text, or an image by FileService URI (``file://``) or http(s) URL."""

    text: str | None = None
    image_uri: str | None = None
    content_type: str = ""

    def to_json(self) -> dict[str, Any]:
        if self.text is not None:
            return {"text": self.text}
        return {"image": self.image_uri, "content_type": self.content_type}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ContentPart:
        if "text" in data:
            return cls(text=data["text"])
        return cls(image_uri=data["image"], content_type=data.get("content_type") or "")


@dataclass(frozen=True)
class RequestInput:
    """One request as added to a job."""

    request_id: str
    parts: tuple[ContentPart, ...]
    output_schema: dict[str, Any] | None = None
    output_schema_name: str = ""
    metadata: dict[str, Any] | None = None

    def body(self) -> dict[str, Any]:
        """The stored payload (JSON-able)."""
        return {"parts": [p.to_json() for p in self.parts], "schema": self.output_schema,
                "schema_name": self.output_schema_name, "metadata": self.metadata}

    @classmethod
    def from_body(cls, request_id: str, body: dict[str, Any]) -> RequestInput:
        return cls(request_id=request_id,
                   parts=tuple(ContentPart.from_json(p) for p in body.get("parts") or ()),
                   output_schema=body.get("schema"),
                   output_schema_name=body.get("schema_name") or "",
                   metadata=body.get("metadata"))


@dataclass(frozen=True)
class ErrorDetail:
    """Why a request (or one of its attempts) failed."""

    code: str
    reason: str
    message: str
    retryable: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "reason": self.reason, "message": self.message,
                "retryable": self.retryable}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> ErrorDetail | None:
        if not data:
            return None
        return cls(code=str(data.get("code", "")), reason=str(data.get("reason", "")),
                   message=str(data.get("message", "")), retryable=bool(data.get("retryable")))


@dataclass(frozen=True)
class Result:
    """The one result of a request (``sequence`` numbers a job's results 1, 2, ...).

    ``response_json`` and ``metadata`` stay JSON text until a reader needs them (the stream
    of results converts them straight to protobuf).
    """

    sequence: int
    request_id: str
    state: RequestState
    response_text: str = ""
    response_json: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = None
    error: ErrorDetail | None = None
    metadata: str | None = None
    attempts: int = 0
    complete_time: float = field(default_factory=time.time)


@dataclass(frozen=True)
class RequestStatus:
    """GetRequest: a request's state, attempts, last error, input and result."""

    request_id: str
    state: RequestState
    attempts: int
    last_error: ErrorDetail | None
    request: RequestInput
    result: Result | None


@dataclass(frozen=True)
class StateEvent:
    """A job state change, delivered by WatchJob after result ``after_sequence``."""

    after_sequence: int
    state: JobState
    time: float


@dataclass(frozen=True)
class JobPage:
    """A page of ListJobs."""

    items: list[Job]
    next_page_token: str
    total: int


class EventType(enum.StrEnum):
    """Kinds of WatchJob event."""

    REQUEST_SUCCEEDED = "request_succeeded"
    REQUEST_FAILED = "request_failed"
    REQUEST_CANCELLED = "request_cancelled"
    STATE_CHANGED = "state_changed"
    PROGRESS = "progress"


REQUEST_EVENTS = {RequestState.SUCCEEDED: EventType.REQUEST_SUCCEEDED,
                  RequestState.FAILED: EventType.REQUEST_FAILED,
                  RequestState.CANCELLED: EventType.REQUEST_CANCELLED}


@dataclass(frozen=True)
class WatchEvent:
    """One WatchJob event. ``sequence`` is the cursor to resume after it: a request event's
    result sequence, or for state and progress events the last result sequence before them.
    """

    sequence: int
    type: EventType
    state: JobState
    request_id: str = ""
    result: Result | None = None
    metrics: JobMetrics | None = None
