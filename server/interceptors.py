"""One interceptor around every rowforge RPC: auth, project context, error mapping, logging.

grpc.aio runs the handler in the task that calls the wrapped behaviour, so the project set
here in a contextvar is what :func:`rowforge.server.auth.current_project` returns inside it.
Health and reflection are exempt from auth.

Requests that protobuf cannot decode (garbage bytes, nesting beyond its limit, a corrupt
message in the middle of a client stream) would leave grpc.aio's deserializer with an
exception it reports as UNKNOWN and logs as an error. Each method's deserializer is wrapped
instead: it hands the handler wrapper an :class:`Undecodable`, which becomes INVALID_ARGUMENT
(reason MALFORMED_REQUEST) after authentication, with one WARNING log line.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from grpc.aio import AbortError

from rowforge.server import tracing
from rowforge.server.auth import Authenticator, set_current_project
from rowforge.server.errors import (
    DeadlineExceeded,
    Internal,
    InvalidArgument,
    ResourceExhausted,
    RowforgeError,
    Unimplemented,
)
from rowforge.server.metrics import DISABLED, Metrics
from rowforge.server.request_ids import HEADER, request_id_for, set_request_id
from rowforge.server.status import to_grpc_status

log = logging.getLogger("rowforge.rpc")
EXEMPT_PREFIXES = ("/grpc.health.", "/grpc.reflection.")


class Undecodable:
    """Stands for a request message protobuf could not decode."""

    __slots__ = ("detail",)

    def __init__(self, detail: str) -> None:
        self.detail = detail

    def error(self) -> InvalidArgument:
        return InvalidArgument(f"the request message could not be decoded: {self.detail}",
                               reason="MALFORMED_REQUEST")


def _tolerant(deserializer: Callable[[bytes], Any] | None, method: str
              ) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except (DecodeError, RecursionError, ValueError) as exc:
            detail = str(exc).rsplit(": ", 1)[-1][:200] or type(exc).__name__
            log.warning("undecodable request to %s (%d bytes): %s", method, len(data), detail)
            return Undecodable(detail)

    return deserialize


async def _checked(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """A client stream that raises INVALID_ARGUMENT at the first undecodable message."""
    async for request in requests:
        if isinstance(request, Undecodable):
            raise request.error()
        yield request


def _checked_request(request: Any) -> Any:
    if isinstance(request, Undecodable):
        raise request.error()
    if hasattr(request, "__aiter__"):
        return _checked(request)
    return request


class RowforgeInterceptor(grpc.aio.ServerInterceptor):
    """Wraps each rowforge handler: authenticate, set the project, map errors, log."""

    #: The retry delay a refused call is told (RetryInfo) when the server is at its cap.
    OVERLOAD_RETRY_S = 1.0

    def __init__(self, authenticator: Authenticator, *, max_concurrent_rpcs: int = 0,
                 metrics: Metrics = DISABLED) -> None:
        self.auth = authenticator
        self.metrics = metrics
        self.max_concurrent_rpcs = max_concurrent_rpcs
        #: RPCs admitted and not finished (health and reflection are not counted).
        self.in_flight = 0
        metrics.count_in_flight(lambda: self.in_flight)

    def _admit(self) -> None:
        """Count the call in, or refuse it when the server is at ``max_concurrent_rpcs``."""
        if self.max_concurrent_rpcs and self.in_flight >= self.max_concurrent_rpcs:
            raise ResourceExhausted(
                f"the server is serving its maximum of {self.max_concurrent_rpcs} calls; "
                "retry shortly", reason="SERVER_OVERLOADED", retry_after=self.OVERLOAD_RETRY_S,
                metadata={"maxConcurrentRpcs": self.max_concurrent_rpcs})
        self.in_flight += 1

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(EXEMPT_PREFIXES):
            return handler
        handler = handler._replace(
            request_deserializer=_tolerant(handler.request_deserializer, method))
        if handler.unary_unary:
            return handler._replace(unary_unary=self._unary(handler.unary_unary, method, False))
        if handler.stream_unary:
            return handler._replace(stream_unary=self._unary(handler.stream_unary, method, True))
        if handler.unary_stream:
            return handler._replace(unary_stream=self._stream(handler.unary_stream, method,
                                                              False))
        return handler._replace(stream_stream=self._stream(handler.stream_stream, method, True))

    @staticmethod
    async def _identify(context: grpc.aio.ServicerContext, metadata: dict[str, str]) -> str:
        """The call's request id, sent back at once in the initial metadata (errors carry it
        too: google.rpc.RequestInfo)."""
        request_id = request_id_for(metadata)
        set_request_id(request_id)
        await context.send_initial_metadata(((HEADER, request_id),))
        return request_id

    async def _enter(self, metadata: dict[str, str], method: str) -> str:
        project = await self.auth.project_for(metadata, method)
        set_current_project(project)
        return project

    def _unary(self, behavior: Callable[..., Awaitable[Any]], method: str,
               client_streaming: bool):
        async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
            start = time.perf_counter()
            observed = self.metrics.rpc_started(method, client_streaming, False)
            project = "-"
            code = "OK"
            request_id = ""
            admitted = False
            metadata = _metadata(context)
            with tracing.rpc_span(method, metadata) as span:
                try:
                    request_id = await self._identify(context, metadata)
                    self._admit()
                    admitted = True
                    project = await self._enter(metadata, method)
                    result = behavior(_checked_request(request), context)
                    return await result if inspect.isawaitable(result) else result
                except BaseException as exc:
                    err = _to_error(exc, method)
                    if err is None:
                        code = "CANCELLED" if isinstance(exc, asyncio.CancelledError) \
                            else "ABORTED"
                        raise
                    code = err.code
                    await context.abort_with_status(to_grpc_status(err, request_id))
                finally:
                    if admitted:
                        self.in_flight -= 1
                    self.metrics.rpc_handled(method, code, observed)
                    tracing.rpc_done(span, code)
                    _log_call(method, project, code, start)

        return wrapper

    def _stream(self, behavior: Callable[..., AsyncIterator[Any]], method: str,
                client_streaming: bool):
        async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            start = time.perf_counter()
            observed = self.metrics.rpc_started(method, client_streaming, True)
            project = "-"
            code = "OK"
            request_id = ""
            admitted = False
            metadata = _metadata(context)
            with tracing.rpc_span(method, metadata) as span:
                try:
                    request_id = await self._identify(context, metadata)
                    self._admit()
                    admitted = True
                    project = await self._enter(metadata, method)
                    async for item in behavior(_checked_request(request), context):
                        yield item
                except BaseException as exc:
                    err = _to_error(exc, method)
                    if err is None:
                        code = "CANCELLED" if isinstance(exc, asyncio.CancelledError) \
                            else "ABORTED"
                        raise
                    code = err.code
                    await context.abort_with_status(to_grpc_status(err, request_id))
                finally:
                    if admitted:
                        self.in_flight -= 1
                    self.metrics.rpc_handled(method, code, observed)
                    tracing.rpc_done(span, code)
                    _log_call(method, project, code, start)

        return wrapper


def _metadata(context: grpc.aio.ServicerContext) -> dict[str, str]:
    """The call's text metadata, keys lowercased."""
    return {k.lower(): v for k, v in context.invocation_metadata() or () if isinstance(v, str)}


def _to_error(exc: BaseException, method: str) -> RowforgeError | None:
    """The domain error to send for ``exc``; None when the call is already over (cancelled,
    or aborted by the handler itself)."""
    if isinstance(exc, (asyncio.CancelledError, AbortError, GeneratorExit)):
        return None
    if isinstance(exc, RowforgeError):
        if exc.code == "INTERNAL":
            log.error("internal error in %s: %s", method, exc.message, exc_info=exc)
        return exc
    if isinstance(exc, TimeoutError):
        return DeadlineExceeded("the operation timed out")
    if isinstance(exc, NotImplementedError):
        return Unimplemented(f"{method} is not implemented yet")
    log.error("unhandled error in %s", method, exc_info=exc)
    return Internal("internal error; the server logged the details")


def _log_call(method: str, project: str, code: str, start: float) -> None:
    if log.isEnabledFor(logging.INFO):
        log.info("rpc", extra={"rpc": {
            "method": method, "project": project, "code": code,
            "ms": round((time.perf_counter() - start) * 1000, 2)}})
