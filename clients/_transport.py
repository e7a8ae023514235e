"""One definition of every client method, two ways to run it (sync and asyncio).

A client method builds a *plan*: a generator that yields small operations (:class:`Unary`,
:class:`Open` / :class:`Next` for server streams, :class:`Upload` for client streams,
:class:`Sleep`, :class:`Emit` to hand a value to the caller) and receives their results. The
plan holds all the logic (request building, paging, resuming, parsing) and does no I/O; the
two drivers below do the I/O with the sync ``grpc`` stack or ``grpc.aio``. That keeps
``RowForge`` and ``AsyncRowForge`` identical by construction.

Failed calls are turned into :mod:`rowforge.clients.exceptions` here and thrown into the plan
(which may catch them, e.g. to resume a stream). Idempotent calls are retried on UNAVAILABLE
with exponential backoff; a server stream is retried only before its first message.

Client streams (:class:`Upload`) of the asyncio client run on the blocking stack in a worker
thread: ``grpc.aio`` turns a status that arrives while the client is still writing (a server
refusing an upload after its first chunks: wrong type, too large, over quota) into INTERNAL
"Internal error from Core" (grpc/grpc#36066, open in grpcio 1.85), while the blocking stack
reports the server's own status and details.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar, cast

import grpc

from rowforge.clients.config import ClientConfig
from rowforge.clients.exceptions import (
    RequestCancelledError,
    RowForgeError,
    UnavailableError,
    from_rpc_error,
)
from rowforge.v1 import (
    batch_job_service_pb2_grpc,
    file_service_pb2_grpc,
    knowledge_service_pb2_grpc,
    model_service_pb2_grpc,
    table_service_pb2_grpc,
)

T = TypeVar("T")

STUBS: dict[str, Callable[[Any], Any]] = {
    "TableService": table_service_pb2_grpc.TableServiceStub,
    "KnowledgeService": knowledge_service_pb2_grpc.KnowledgeServiceStub,
    "FileService": file_service_pb2_grpc.FileServiceStub,
    "BatchJobService": batch_job_service_pb2_grpc.BatchJobServiceStub,
    "ModelService": model_service_pb2_grpc.ModelServiceStub,
}

#: Which configured deadline a call gets: the call timeout, the upload timeout, or none
#: (streams that follow a job until it ends; they resume instead).
Deadline = Literal["call", "upload", "none"]


@dataclass(frozen=True, slots=True)
class Unary:
    """Call a unary RPC; the plan receives the response message."""

    service: str
    method: str
    request: Any
    idempotent: bool = False
    deadline: Deadline = "call"


@dataclass(frozen=True, slots=True)
class Open:
    """Start a server-streaming RPC; the plan receives a handle for :class:`Next`."""

    service: str
    method: str
    request: Any
    idempotent: bool = False
    deadline: Deadline = "call"


@dataclass(frozen=True, slots=True)
class Next:
    """Read the next message of an opened stream; the plan receives it, or ``None`` at the end."""

    stream: Any


@dataclass(frozen=True, slots=True)
class Upload:
    """Call a client-streaming RPC with ``requests``; the plan receives the response."""

    service: str
    method: str
    requests: Iterable[Any]
    deadline: Deadline = "upload"


@dataclass(frozen=True, slots=True)
class Sleep:
    """Wait (e.g. before resuming a stream)."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Emit:
    """Hand a value to the caller of a streaming method."""

    value: Any


Op = Unary | Open | Next | Upload | Sleep | Emit
Plan = Generator[Op, Any, T]


def one_call(op: Unary | Upload, parse: Callable[[Any], T]) -> Plan[T]:
    """The plan of a single call: its response, turned into the result by ``parse``."""
    resp = yield op
    return parse(resp)


class _Stepper:
    """Advances a plan: sends results in, throws errors in, tells the driver what is next."""

    __slots__ = ("done", "plan", "result")

    def __init__(self, plan: Plan[Any]) -> None:
        self.plan = plan
        self.done = False
        self.result: Any = None

    def step(self, value: Any = None, error: BaseException | None = None) -> Op | None:
        try:
            op = self.plan.throw(error) if error is not None else self.plan.send(value)
        except StopIteration as stop:
            self.done, self.result = True, stop.value
            return None
        return op


class _CallSet:
    """The server streams a plan opened, so they can be cancelled together (from any
    thread); a stream added after :meth:`cancel` starts cancelled."""

    def __init__(self) -> None:
        self._streams: list[Any] = []
        self.cancelled = False

    def add(self, stream: Any) -> None:
        self._streams.append(stream)
        if self.cancelled:
            stream.cancel()

    def cancel(self) -> None:
        self.cancelled = True
        for stream in list(self._streams):
            stream.cancel()


class _Base:
    def __init__(self, config: ClientConfig) -> None:
        self.config = config
        self._metadata = config.metadata()
        self._stubs: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _timeout(self, deadline: Deadline) -> float | None:
        if deadline == "none":
            return None
        if deadline == "upload":
            return self.config.file_upload_timeout
        return self.config.timeout

    def _callable(self, service: str, method: str) -> Any:
        stub = self._stubs.get(service)
        if stub is None:
            with self._lock:
                stub = self._stubs.get(service) or STUBS[service](self.channel)
                self._stubs[service] = stub
        return getattr(stub, method)

    @property
    def channel(self) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def _retry_wait(self, err: RowForgeError, attempt: int, idempotent: bool,
                    deadline_at: float | None) -> float | None:
        """Seconds to wait before retrying, or ``None`` to give up."""
        retry = self.config.retry
        if not idempotent or not isinstance(err, UnavailableError) or attempt >= retry.max_attempts:
            return None
        wait = retry.backoff(attempt, err.retry_after)
        if deadline_at is not None and time.monotonic() + wait >= deadline_at:
            return None
        return wait


def _remaining(deadline_at: float | None) -> float | None:
    return None if deadline_at is None else max(deadline_at - time.monotonic(), 0.001)


# -- sync --------------------------------------------------------------------------------------

class _SyncStream:
    """A server stream on the sync stack, opened lazily so a retry can reopen it."""

    def __init__(self, transport: SyncTransport, op: Open) -> None:
        self.transport = transport
        self.op = op
        self.call: Any = None
        self.received = 0
        self.cancelled = False

    def next(self) -> Any:
        if self.cancelled:
            raise RequestCancelledError("the stream was cancelled by the client")
        t = self.transport
        timeout = t._timeout(self.op.deadline)
        deadline_at = None if timeout is None else time.monotonic() + timeout
        attempt = 0
        while True:
            attempt += 1
            if self.call is None:
                self.call = t._callable(self.op.service, self.op.method)(
                    self.op.request, timeout=_remaining(deadline_at), metadata=t._metadata)
            try:
                message = next(self.call)
            except StopIteration:
                return None
            except grpc.RpcError as exc:
                err = from_rpc_error(exc)
                wait = (t._retry_wait(err, attempt, self.op.idempotent, deadline_at)
                        if self.received == 0 else None)
                if wait is None:
                    raise err from None
                self.call = None
                time.sleep(wait)
                continue
            self.received += 1
            return message

    def cancel(self) -> None:
        self.cancelled = True
        if self.call is not None:
            self.call.cancel()


class SyncStream(Generic[T]):
    """What a streaming method of the sync client returns: an iterator. ``close()`` stops it
    (from the iterating thread); ``cancel()`` may be called from any thread and makes a
    blocked ``next()`` raise :class:`~rowforge.clients.exceptions.RequestCancelledError`."""

    def __init__(self, iterator: Iterator[T], calls: _CallSet) -> None:
        self._iterator = iterator
        self._calls = calls

    def __iter__(self) -> SyncStream[T]:
        return self

    def __next__(self) -> T:
        return next(self._iterator)

    def close(self) -> None:
        close = getattr(self._iterator, "close", None)
        if close is not None:
            close()

    def cancel(self) -> None:
        self._calls.cancel()

    def __enter__(self) -> SyncStream[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SyncTransport(_Base):
    """Runs plans on a sync ``grpc`` channel."""

    def __init__(self, config: ClientConfig, channel: grpc.Channel | None = None) -> None:
        super().__init__(config)
        self._owns_channel = channel is None
        self._channel = channel or _sync_channel(config)

    @property
    def channel(self) -> grpc.Channel:
        return self._channel

    def close(self) -> None:
        if self._owns_channel:
            self._channel.close()

    def run(self, plan: Plan[T]) -> T:
        """Run a plan to completion and return its result."""
        stepper, streams = _Stepper(plan), _CallSet()
        try:
            op = stepper.step()
            while not stepper.done:
                if isinstance(op, Emit):
                    raise TypeError("a plan run with run() must not emit values")
                assert op is not None
                try:
                    value = self._perform(op, streams)
                except RowForgeError as err:
                    op = stepper.step(error=err)
                else:
                    op = stepper.step(value)
            return cast(T, stepper.result)
        finally:
            _close(stepper, streams)

    def iterate(self, plan: Plan[Any]) -> SyncStream[Any]:
        """Run a plan lazily, yielding what it emits; closing the iterator cancels its calls."""
        calls = _CallSet()
        return SyncStream(self._iterate(plan, calls), calls)

    def _iterate(self, plan: Plan[Any], streams: _CallSet) -> Iterator[Any]:
        stepper = _Stepper(plan)
        try:
            op = stepper.step()
            while not stepper.done:
                if isinstance(op, Emit):
                    yield op.value
                    op = stepper.step()
                    continue
                assert op is not None
                try:
                    value = self._perform(op, streams)
                except RowForgeError as err:
                    op = stepper.step(error=err)
                else:
                    op = stepper.step(value)
        finally:
            _close(stepper, streams)

    def _perform(self, op: Op, streams: _CallSet) -> Any:
        if isinstance(op, Next):
            return op.stream.next()
        if isinstance(op, Unary):
            return self._unary(op)
        if isinstance(op, Open):
            stream = _SyncStream(self, op)
            streams.add(stream)
            return stream
        if isinstance(op, Upload):
            try:
                return self._callable(op.service, op.method)(
                    iter(op.requests), timeout=self._timeout(op.deadline), metadata=self._metadata)
            except grpc.RpcError as exc:
                raise from_rpc_error(exc) from None
        if isinstance(op, Sleep):
            time.sleep(op.seconds)
            return None
        raise TypeError(f"unknown plan operation {op!r}")

    def _unary(self, op: Unary) -> Any:
        fn = self._callable(op.service, op.method)
        timeout = self._timeout(op.deadline)
        deadline_at = None if timeout is None else time.monotonic() + timeout
        attempt = 0
        while True:
            attempt += 1
            try:
                return fn(op.request, timeout=_remaining(deadline_at), metadata=self._metadata)
            except grpc.RpcError as exc:
                err = from_rpc_error(exc)
                wait = self._retry_wait(err, attempt, op.idempotent, deadline_at)
                if wait is None:
                    raise err from None
                time.sleep(wait)


# -- asyncio -----------------------------------------------------------------------------------

class _AsyncStreamCall:
    """A server stream on ``grpc.aio``, opened lazily so a retry can reopen it."""

    def __init__(self, transport: AsyncTransport, op: Open) -> None:
        self.transport = transport
        self.op = op
        self.call: Any = None
        self.received = 0
        self.cancelled = False

    async def next(self) -> Any:
        if self.cancelled:
            raise RequestCancelledError("the stream was cancelled by the client")
        t = self.transport
        timeout = t._timeout(self.op.deadline)
        deadline_at = None if timeout is None else time.monotonic() + timeout
        attempt = 0
        while True:
            attempt += 1
            if self.call is None:
                self.call = t._callable(self.op.service, self.op.method)(
                    self.op.request, timeout=_remaining(deadline_at), metadata=t._metadata)
            try:
                message = await self.call.read()
            except grpc.RpcError as exc:
                err = from_rpc_error(exc)
                wait = (t._retry_wait(err, attempt, self.op.idempotent, deadline_at)
                        if self.received == 0 else None)
                if wait is None:
                    raise err from None
                self.call = None
                await asyncio.sleep(wait)
                continue
            if message is grpc.aio.EOF:
                return None
            self.received += 1
            return message

    def cancel(self) -> None:
        self.cancelled = True
        if self.call is not None:
            self.call.cancel()


class AsyncStream(Generic[T]):
    """What a streaming method of the async client returns: iterate it with ``async for``
    (awaiting it first also works, as with the JamAI SDK: ``async for c in await ...``)."""

    def __init__(self, iterator: AsyncIterator[T]) -> None:
        self._iterator = iterator

    def __aiter__(self) -> AsyncIterator[T]:
        return self._iterator

    async def __anext__(self) -> T:
        return await self._iterator.__anext__()

    def __await__(self) -> Generator[Any, None, AsyncStream[T]]:
        async def itself() -> AsyncStream[T]:
            return self

        return itself().__await__()

    async def aclose(self) -> None:
        """Stop early: cancels the calls behind the stream."""
        close = getattr(self._iterator, "aclose", None)
        if close is not None:
            await close()


class AsyncTransport(_Base):
    """Runs plans on a ``grpc.aio`` channel (client streams on a blocking channel to the same
    address, see the module docstring)."""

    def __init__(self, config: ClientConfig, channel: grpc.aio.Channel | None = None) -> None:
        super().__init__(config)
        self._channel = channel
        self._owns_channel = channel is None
        self._blocking: grpc.Channel | None = None
        self._blocking_stubs: dict[str, Any] = {}

    @property
    def channel(self) -> grpc.aio.Channel:
        # Created on first use, inside the running event loop grpc.aio binds it to.
        if self._channel is None:
            self._channel = _async_channel(self.config)
        return self._channel

    async def close(self) -> None:
        if self._channel is not None and self._owns_channel:
            await self._channel.close()
        self._channel = None
        self._stubs.clear()
        with self._lock:
            blocking, self._blocking = self._blocking, None
            self._blocking_stubs.clear()
        if blocking is not None:
            blocking.close()

    def _blocking_callable(self, service: str, method: str) -> Any:
        with self._lock:
            if self._blocking is None:
                self._blocking = _sync_channel(self.config)
            stub = self._blocking_stubs.get(service)
            if stub is None:
                stub = self._blocking_stubs[service] = STUBS[service](self._blocking)
        return getattr(stub, method)

    async def run(self, plan: Plan[T]) -> T:
        """Run a plan to completion and return its result."""
        stepper, streams = _Stepper(plan), _CallSet()
        try:
            op = stepper.step()
            while not stepper.done:
                if isinstance(op, Emit):
                    raise TypeError("a plan run with run() must not emit values")
                assert op is not None
                try:
                    value = await self._perform(op, streams)
                except RowForgeError as err:
                    op = stepper.step(error=err)
                else:
                    op = stepper.step(value)
            return cast(T, stepper.result)
        finally:
            _close(stepper, streams)

    def iterate(self, plan: Plan[Any]) -> AsyncStream[Any]:
        """Run a plan lazily as an async iterator of what it emits."""
        return AsyncStream(self._iterate(plan))

    async def _iterate(self, plan: Plan[Any]) -> AsyncIterator[Any]:
        stepper, streams = _Stepper(plan), _CallSet()
        try:
            op = stepper.step()
            while not stepper.done:
                if isinstance(op, Emit):
                    yield op.value
                    op = stepper.step()
                    continue
                assert op is not None
                try:
                    value = await self._perform(op, streams)
                except RowForgeError as err:
                    op = stepper.step(error=err)
                else:
                    op = stepper.step(value)
        finally:
            _close(stepper, streams)

    async def _perform(self, op: Op, streams: _CallSet) -> Any:
        if isinstance(op, Next):
            return await op.stream.next()
        if isinstance(op, Unary):
            return await self._unary(op)
        if isinstance(op, Open):
            stream = _AsyncStreamCall(self, op)
            streams.add(stream)
            return stream
        if isinstance(op, Upload):
            return await self._upload(op)
        if isinstance(op, Sleep):
            await asyncio.sleep(op.seconds)
            return None
        raise TypeError(f"unknown plan operation {op!r}")

    async def _upload(self, op: Upload) -> Any:
        """A client stream on the blocking stack (its own thread feeds the requests); the
        event loop only waits. Cancelling the task cancels the call."""
        call = self._blocking_callable(op.service, op.method).future(
            iter(op.requests), timeout=self._timeout(op.deadline), metadata=self._metadata)
        loop = asyncio.get_running_loop()
        finished = loop.create_future()

        def wake(_: Any) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
                loop.call_soon_threadsafe(
                    lambda: None if finished.done() else finished.set_result(None))

        call.add_done_callback(wake)
        try:
            await finished
        except asyncio.CancelledError:
            call.cancel()
            raise
        try:
            return call.result()
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    async def _unary(self, op: Unary) -> Any:
        fn = self._callable(op.service, op.method)
        timeout = self._timeout(op.deadline)
        deadline_at = None if timeout is None else time.monotonic() + timeout
        attempt = 0
        while True:
            attempt += 1
            try:
                return await fn(op.request, timeout=_remaining(deadline_at),
                                metadata=self._metadata)
            except grpc.RpcError as exc:
                err = from_rpc_error(exc)
                wait = self._retry_wait(err, attempt, op.idempotent, deadline_at)
                if wait is None:
                    raise err from None
                await asyncio.sleep(wait)


def _close(stepper: _Stepper, streams: _CallSet) -> None:
    streams.cancel()
    stepper.plan.close()


def _credentials(config: ClientConfig) -> grpc.ChannelCredentials | None:
    if config.tls is None:
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=config.tls.root_certificates, private_key=config.tls.private_key,
        certificate_chain=config.tls.certificate_chain)


def _sync_channel(config: ClientConfig) -> grpc.Channel:
    creds = _credentials(config)
    options = config.grpc_options()
    if creds is None:
        return grpc.insecure_channel(config.address, options=options)
    return grpc.secure_channel(config.address, creds, options=options)


def _async_channel(config: ClientConfig) -> grpc.aio.Channel:
    creds = _credentials(config)
    options = config.grpc_options()
    if creds is None:
        return grpc.aio.insecure_channel(config.address, options=options)
    return grpc.aio.secure_channel(config.address, creds, options=options)


#: Either driver; the client classes are built over one.
Transport = SyncTransport | AsyncTransport


def sync_view(transport: Transport) -> SyncTransport:
    """The transport as the client methods are typed: they are written once, against the
    sync driver's signatures; the asyncio client's types are generated from them
    (``_async_api.pyi``, see ``scripts/gen_async_api.py``)."""
    return cast(SyncTransport, transport)
