"""Domain errors: what went wrong, in words a caller can act on.

The domain layer raises these; exactly one boundary (``rowforge.server.status``) turns them
into gRPC statuses with ``google.rpc`` details. Nothing here imports grpc.
"""

from __future__ import annotations

import re
import reprlib
from dataclasses import dataclass, field
from typing import Any

DOMAIN = "rowforge.dev"

#: Characters of a caller's value an error quotes before cutting it with "…".
VALUE_LIMIT = 120
#: UTF-8 bytes of an error message. gRPC percent-encodes the message into the
#: ``grpc-message`` trailer (up to 3 bytes per byte) and the details repeat it; clients
#: refuse trailers above 8 KiB (soft) / 16 KiB (hard), so messages and details stay small.
MESSAGE_LIMIT = 800
ELLIPSIS = "…"
_SCAN_LIMIT = 16384
_LONG_RUN = re.compile(rf"\S{{{VALUE_LIMIT + 1},}}")
_REPR = reprlib.Repr()  # keyword arguments need Python 3.12
_REPR.maxstring = _REPR.maxother = VALUE_LIMIT


def clip(text: str, limit: int = VALUE_LIMIT) -> str:
    """``text`` cut to ``limit`` characters plus "…" when it is longer.

    The one way errors echo a caller's value: in messages, ``ErrorInfo`` metadata,
    field violations and resource names (a 5 MB value must not come back in the trailers).
    """
    return text if len(text) <= limit else text[:limit] + ELLIPSIS


def shown(value: object, limit: int = VALUE_LIMIT) -> str:
    """A value as an error message quotes it: its ``repr``, cut (``'abc…'``)."""
    if isinstance(value, str):
        return repr(clip(value, limit))
    return clip(_REPR.repr(value), limit)


def clip_message(message: str, limit: int = MESSAGE_LIMIT) -> str:
    """A whole message made safe to send: every run of more than :data:`VALUE_LIMIT`
    non-blank characters is cut (values that were formatted in without :func:`shown`),
    then the message is cut to ``limit`` UTF-8 bytes."""
    if len(message) > _SCAN_LIMIT:  # bound the work: only both ends can be shown anyway
        message = message[:_SCAN_LIMIT // 2] + ELLIPSIS + message[-_SCAN_LIMIT // 2:]
    if len(message) > VALUE_LIMIT:
        message = _LONG_RUN.sub(lambda m: clip(m.group(0)), message)
    if len(message) <= limit // 4 or len(message.encode()) <= limit:
        return message
    return message.encode()[:limit - 3].decode("utf-8", "ignore") + ELLIPSIS


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request (becomes a ``BadRequest.FieldViolation``)."""

    field: str
    description: str

    def clipped(self) -> FieldViolation:
        """The violation with its field path and description cut to sendable sizes."""
        if len(self.field) <= 2 * VALUE_LIMIT and len(self.description) <= VALUE_LIMIT:
            return self
        return FieldViolation(clip(self.field, 2 * VALUE_LIMIT),
                              clip_message(self.description, 3 * VALUE_LIMIT))


class RowforgeError(Exception):
    """Base of every error a caller can cause or act on.

    Args:
        message: English, actionable, no stack traces.
        reason: Stable UPPER_SNAKE_CASE reason for ``ErrorInfo``.
        metadata: Dynamic values of the message (lowerCamelCase keys), for ``ErrorInfo``.
        field_violations: Bad request fields (INVALID_ARGUMENT).
        retry_after: Seconds the caller should wait before retrying (``RetryInfo``).
        resource_type / resource_name: The resource concerned (``ResourceInfo``).
    """

    code = "INTERNAL"
    default_reason = "INTERNAL"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: dict[str, Any] | None = None,
        field_violations: list[FieldViolation] | None = None,
        retry_after: float | None = None,
        resource_type: str = "",
        resource_name: str = "",
    ) -> None:
        message = clip_message(message)
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata = {clip(str(k), 63): clip(str(v)) for k, v in (metadata or {}).items()}
        self.field_violations = [v.clipped() for v in field_violations or ()]
        self.retry_after = retry_after
        self.resource_type = resource_type
        self.resource_name = clip(resource_name)

    def __str__(self) -> str:
        return self.message


class InvalidArgument(RowforgeError):
    """The request is malformed or breaks a limit (INVALID_ARGUMENT)."""

    code = "INVALID_ARGUMENT"
    default_reason = "INVALID_ARGUMENT"

    @classmethod
    def field(cls, name: str, description: str, **kwargs: Any) -> InvalidArgument:
        """One bad field: the message names the field."""
        return cls(f"{name}: {description}", field_violations=[FieldViolation(name, description)],
                   **kwargs)


class NotFound(RowforgeError):
    """The resource does not exist (or belongs to another project) (NOT_FOUND)."""

    code = "NOT_FOUND"
    default_reason = "NOT_FOUND"


class AlreadyExists(RowforgeError):
    """The resource already exists (ALREADY_EXISTS)."""

    code = "ALREADY_EXISTS"
    default_reason = "ALREADY_EXISTS"


class FailedPrecondition(RowforgeError):
    """The system is not in a state that allows the call (FAILED_PRECONDITION)."""

    code = "FAILED_PRECONDITION"
    default_reason = "FAILED_PRECONDITION"


class Aborted(RowforgeError):
    """A concurrent change got in the way; retry the whole operation (ABORTED)."""

    code = "ABORTED"
    default_reason = "ABORTED"


class ResourceExhausted(RowforgeError):
    """A rate limit or quota was hit (RESOURCE_EXHAUSTED); see ``retry_after``."""

    code = "RESOURCE_EXHAUSTED"
    default_reason = "RATE_LIMITED"


class Unavailable(RowforgeError):
    """A dependency is down or overloaded; retry later (UNAVAILABLE)."""

    code = "UNAVAILABLE"
    default_reason = "UNAVAILABLE"


class DeadlineExceeded(RowforgeError):
    """The work did not finish in time (DEADLINE_EXCEEDED)."""

    code = "DEADLINE_EXCEEDED"
    default_reason = "TIMEOUT"


class Unauthenticated(RowforgeError):
    """Missing or invalid credentials (UNAUTHENTICATED)."""

    code = "UNAUTHENTICATED"
    default_reason = "UNAUTHENTICATED"


class PermissionDenied(RowforgeError):
    """Valid credentials that do not allow this call (PERMISSION_DENIED)."""

    code = "PERMISSION_DENIED"
    default_reason = "PERMISSION_DENIED"


class Unimplemented(RowforgeError):
    """The RPC exists in the contract but is not built yet (UNIMPLEMENTED)."""

    code = "UNIMPLEMENTED"
    default_reason = "UNIMPLEMENTED"


class Internal(RowforgeError):
    """A bug or a server-side misconfiguration (INTERNAL); details are logged, not sent."""

    code = "INTERNAL"
    default_reason = "INTERNAL"


@dataclass
class Violations:
    """Collects field violations and raises them together.

    >>> v = Violations(); v.check(limit <= 100, "limit", "must be at most 100"); v.raise_if_any()
    """

    items: list[FieldViolation] = field(default_factory=list)

    def add(self, name: str, description: str) -> None:
        self.items.append(FieldViolation(name, description))

    def check(self, ok: bool, name: str, description: str) -> None:
        if not ok:
            self.add(name, description)

    def raise_if_any(self) -> None:
        if self.items:
            message = "; ".join(f"{v.field}: {v.description}" for v in self.items)
            raise InvalidArgument(message, field_violations=self.items)
