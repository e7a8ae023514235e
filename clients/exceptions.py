"""Typed exceptions for every gRPC status the server can answer.

The class of an error is chosen from a registry keyed on ``(status code, ErrorInfo.reason)``,
the way asyncpg keys its exceptions on SQLSTATE: a subclass declares
``class TableNotFoundError(NotFoundError, code=NOT_FOUND, reason="TABLE_NOT_FOUND")`` and is
picked for exactly that pair; anything else falls back to the class registered for the code
alone, then to :class:`RowForgeError`. Code that matches on the reason should use ``.reason``
(stable), never the message (English, may change).

The seeds' names are aliases: ``JamAIError`` is :class:`RowForgeError`; the batch SDK's
``AjaxAi*Error`` names live in :mod:`rowforge.clients.batch.exceptions`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import grpc
from google.rpc import error_details_pb2, status_pb2

__all__ = [
    "AbortedError",
    "AlreadyExistsError",
    "AuthenticationError",
    "AuthorizationError",
    "ContextWindowExceededError",
    "DeadlineExceededError",
    "FailedPreconditionError",
    "FileNotStoredError",
    "InvalidArgumentError",
    "InvalidPageTokenError",
    "InvalidWhereError",
    "JamAIError",
    "JobNotFoundError",
    "ModelNotFoundError",
    "NotFoundError",
    "OutOfRangeError",
    "PermissionDeniedError",
    "RateLimitError",
    "RequestCancelledError",
    "RowForgeError",
    "RowNotFoundError",
    "ServerError",
    "TableAlreadyExistsError",
    "TableNotFoundError",
    "UnavailableError",
    "UnimplementedError",
    "error_class",
    "from_rpc_error",
]

_S = grpc.StatusCode
_BY_CODE: dict[grpc.StatusCode, type[RowForgeError]] = {}
_BY_REASON: dict[tuple[grpc.StatusCode, str], type[RowForgeError]] = {}


class RowForgeError(Exception):
    """Base of every error the client raises for a failed call.

    Attributes:
        message: The server's English, actionable message.
        code: The ``grpc.StatusCode``.
        reason: Stable UPPER_SNAKE_CASE reason from ``google.rpc.ErrorInfo`` ("" if none).
        domain: ``ErrorInfo.domain``.
        metadata: ``ErrorInfo.metadata`` (the message's dynamic values, lowerCamelCase keys).
        field_violations: ``(field, description)`` pairs from ``google.rpc.BadRequest``.
        retry_after: Seconds to wait from ``google.rpc.RetryInfo``, or ``None``.
        resource_type / resource_name: From ``google.rpc.ResourceInfo`` ("" if none).
        request_id: The server's id of the failed call (its ``x-request-id`` metadata, trailing
            or initial), to quote when asking about it; ``None`` when the server sent none.
    """

    #: The status code this class stands for (set by the registry).
    grpc_code: ClassVar[grpc.StatusCode | None] = None

    def __init_subclass__(cls, code: grpc.StatusCode | None = None, reason: str | None = None,
                          **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if code is None:
            return
        cls.grpc_code = code
        if reason is None:
            _BY_CODE[code] = cls
        else:
            _BY_REASON[(code, reason)] = cls

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode | None = None,
        reason: str = "",
        domain: str = "",
        metadata: Mapping[str, str] | None = None,
        field_violations: Sequence[tuple[str, str]] = (),
        retry_after: float | None = None,
        resource_type: str = "",
        resource_name: str = "",
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.request_id = request_id
        self.message = message
        self.code = code or self.grpc_code or _S.UNKNOWN
        self.reason = reason
        self.domain = domain
        self.metadata = dict(metadata or {})
        self.field_violations = [(str(f), str(d)) for f, d in field_violations]
        self.retry_after = retry_after
        self.resource_type = resource_type
        self.resource_name = resource_name

    @property
    def status_code(self) -> str:
        """The canonical code name, e.g. ``"NOT_FOUND"``."""
        return str(self.code.name)

    def __str__(self) -> str:
        return f"{self.message} ({self.code.name}{': ' + self.reason if self.reason else ''})"

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(message={self.message!r}, code={self.code.name}, "
                f"reason={self.reason!r})")


#: The JamAI SDK's base exception name.
JamAIError = RowForgeError


class InvalidArgumentError(RowForgeError, ValueError, code=_S.INVALID_ARGUMENT):
    """The request is malformed or breaks a limit; see ``field_violations``."""


class OutOfRangeError(InvalidArgumentError, code=_S.OUT_OF_RANGE):
    """A value is outside the range the server accepts (e.g. a byte range past the end)."""


class NotFoundError(RowForgeError, code=_S.NOT_FOUND):
    """The resource does not exist (or belongs to another project)."""


class AlreadyExistsError(RowForgeError, code=_S.ALREADY_EXISTS):
    """The resource already exists."""


class FailedPreconditionError(RowForgeError, code=_S.FAILED_PRECONDITION):
    """The resource is not in a state that allows the call (e.g. cancelling a finished job)."""


class AbortedError(RowForgeError, code=_S.ABORTED):
    """A concurrent change got in the way; retry the whole operation."""


class AuthorizationError(RowForgeError):
    """Common base of :class:`AuthenticationError` and :class:`PermissionDeniedError`
    (HTTP 401/403), which the batch SDK catches as one."""


class AuthenticationError(AuthorizationError, code=_S.UNAUTHENTICATED):
    """Missing, malformed or invalid token."""


class PermissionDeniedError(AuthorizationError, code=_S.PERMISSION_DENIED):
    """Valid credentials that do not allow this call (e.g. another project)."""


class RateLimitError(RowForgeError, code=_S.RESOURCE_EXHAUSTED):
    """A rate limit or quota was hit; wait ``retry_after`` seconds (when given)."""


class ServerError(RowForgeError, code=_S.INTERNAL):
    """The server failed (INTERNAL, UNKNOWN, DATA_LOSS): a bug or a misconfiguration."""


_BY_CODE[_S.UNKNOWN] = ServerError
_BY_CODE[_S.DATA_LOSS] = ServerError


class UnavailableError(ServerError, code=_S.UNAVAILABLE):
    """The server or one of its dependencies is down or overloaded; retry later."""


class DeadlineExceededError(ServerError, code=_S.DEADLINE_EXCEEDED):
    """The call did not finish before its deadline."""


class UnimplementedError(ServerError, code=_S.UNIMPLEMENTED):
    """The server does not implement this RPC (yet)."""


class RequestCancelledError(RowForgeError, code=_S.CANCELLED):
    """The call was cancelled (by this client or the server shutting down)."""


# -- reason-specific classes (subclasses of their code's class) -----------------------------

class TableNotFoundError(NotFoundError, code=_S.NOT_FOUND, reason="TABLE_NOT_FOUND"):
    """No such table of that type."""


class RowNotFoundError(NotFoundError, code=_S.NOT_FOUND, reason="ROW_NOT_FOUND"):
    """No such row in the table."""


class FileNotStoredError(NotFoundError, code=_S.NOT_FOUND, reason="FILE_NOT_FOUND"):
    """No file with that URI in the project (not the builtin :class:`FileNotFoundError`)."""


class ModelNotFoundError(NotFoundError, code=_S.NOT_FOUND, reason="MODEL_NOT_FOUND"):
    """The server has no such model (or none with the capability asked for)."""


class JobNotFoundError(NotFoundError, code=_S.NOT_FOUND, reason="JOB_NOT_FOUND"):
    """No such batch job."""


class TableAlreadyExistsError(AlreadyExistsError, code=_S.ALREADY_EXISTS,
                              reason="TABLE_ALREADY_EXISTS"):
    """A table with that id and type exists."""


class ContextWindowExceededError(InvalidArgumentError, code=_S.INVALID_ARGUMENT,
                                 reason="CONTEXT_WINDOW_EXCEEDED"):
    """The prompt does not fit the model's context window."""


class InvalidWhereError(InvalidArgumentError, code=_S.INVALID_ARGUMENT, reason="INVALID_WHERE"):
    """The ``where`` filter does not parse or names unknown columns."""


class InvalidPageTokenError(InvalidArgumentError, code=_S.INVALID_ARGUMENT,
                            reason="INVALID_PAGE_TOKEN"):
    """The page token is malformed or belongs to another query."""


def error_class(code: grpc.StatusCode, reason: str = "") -> type[RowForgeError]:
    """The exception class for a status code and ``ErrorInfo`` reason."""
    return _BY_REASON.get((code, reason)) or _BY_CODE.get(code) or RowForgeError


def _decode_status(err: grpc.RpcError) -> status_pb2.Status | None:
    from grpc_status import rpc_status

    try:
        return rpc_status.from_call(err)
    except (ValueError, AttributeError, TypeError):
        # A status whose details disagree with the trailers' code/message, or an error object
        # without trailers (e.g. a channel that never connected): keep code and message only.
        return None


def from_rpc_error(err: grpc.RpcError) -> RowForgeError:
    """The typed exception for a failed call, with its ``google.rpc`` details decoded."""
    code = err.code() if callable(getattr(err, "code", None)) else _S.UNKNOWN
    message = (err.details() if callable(getattr(err, "details", None)) else None) or ""
    kwargs: dict[str, Any] = {}
    status = _decode_status(err)
    if status is not None:
        message = status.message or message
        violations: list[tuple[str, str]] = []
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                kwargs.update(reason=info.reason, domain=info.domain, metadata=dict(info.metadata))
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                violations.extend((v.field, v.description) for v in bad.field_violations)
            elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                retry = error_details_pb2.RetryInfo()
                detail.Unpack(retry)
                kwargs["retry_after"] = retry.retry_delay.ToNanoseconds() / 1e9
            elif detail.Is(error_details_pb2.ResourceInfo.DESCRIPTOR):
                resource = error_details_pb2.ResourceInfo()
                detail.Unpack(resource)
                kwargs.update(resource_type=resource.resource_type,
                              resource_name=resource.resource_name)
        kwargs["field_violations"] = violations
    kwargs["request_id"] = _request_id(err)
    cls = error_class(code, kwargs.get("reason", ""))
    return cls(message or code.name, code=code, **kwargs)


REQUEST_ID_KEY = "x-request-id"


def _request_id(err: grpc.RpcError) -> str | None:
    """``x-request-id`` from the call's trailing metadata, else its initial metadata."""
    for getter in ("trailing_metadata", "initial_metadata"):
        get = getattr(err, getter, None)
        try:
            pairs = get() if callable(get) else None
        except Exception:  # an aio error raised before metadata arrived, a fake error
            pairs = None
        for key, value in pairs or ():
            if key.lower() == REQUEST_ID_KEY:
                return value.decode() if isinstance(value, bytes) else str(value)
    return None
