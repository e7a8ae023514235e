"""An in-process fake rowforge server for client unit tests.

A real ``grpc.aio`` server on a loopback port, run on its own event loop in a background
thread (so sync clients can call it from the test thread), serving whatever servicers the test
gives (subclasses of the generated ``*Servicer`` base classes: every RPC they do not override
answers UNIMPLEMENTED). Each call's method and metadata are recorded.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from rowforge.v1 import (
    batch_job_service_pb2_grpc,
    file_service_pb2_grpc,
    knowledge_service_pb2_grpc,
    model_service_pb2_grpc,
    table_service_pb2_grpc,
)

_ADDERS = {
    table_service_pb2_grpc.TableServiceServicer:
        table_service_pb2_grpc.add_TableServiceServicer_to_server,
    knowledge_service_pb2_grpc.KnowledgeServiceServicer:
        knowledge_service_pb2_grpc.add_KnowledgeServiceServicer_to_server,
    file_service_pb2_grpc.FileServiceServicer:
        file_service_pb2_grpc.add_FileServiceServicer_to_server,
    batch_job_service_pb2_grpc.BatchJobServiceServicer:
        batch_job_service_pb2_grpc.add_BatchJobServiceServicer_to_server,
    model_service_pb2_grpc.ModelServiceServicer:
        model_service_pb2_grpc.add_ModelServiceServicer_to_server,
}


@dataclass
class Call:
    """One RPC the fake received."""

    method: str  # e.g. "/rowforge.v1.TableService/GetTable"
    metadata: dict[str, str]


@dataclass
class _Recorder(grpc.aio.ServerInterceptor):
    calls: list[Call] = field(default_factory=list)

    async def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        md = {k: v for k, v in (details.invocation_metadata or ()) if isinstance(v, str)}
        self.calls.append(Call(details.method, md))
        return await continuation(details)


class FakeServer:
    """``with FakeServer([servicer, ...]) as fake: RowForge(address=fake.address)``."""

    def __init__(self, servicers: Iterable[Any], *,
                 tls: tuple[bytes, bytes] | None = None) -> None:
        """``tls``: (PEM private key, PEM certificate chain) to serve TLS instead of
        plaintext."""
        self.servicers = list(servicers)
        self.tls = tls
        self._recorder = _Recorder()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: grpc.aio.Server | None = None
        self.port = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def calls(self) -> list[Call]:
        return self._recorder.calls

    def methods(self) -> list[str]:
        """The short names of the RPCs called, in order (``"GetTable"``)."""
        return [c.method.rsplit("/", 1)[-1] for c in self.calls]

    def start(self) -> FakeServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self) -> None:
        self._server = grpc.aio.server(interceptors=[self._recorder])
        for servicer in self.servicers:
            for base, add in _ADDERS.items():
                if isinstance(servicer, base):
                    add(servicer, self._server)
        if self.tls is None:
            self.port = self._server.add_insecure_port("127.0.0.1:0")
        else:
            creds = grpc.ssl_server_credentials([self.tls])
            self.port = self._server.add_secure_port("127.0.0.1:0", creds)
        await self._server.start()

    def stop(self) -> None:
        if self._server is not None:
            asyncio.run_coroutine_threadsafe(self._server.stop(None), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _pack(message: Any) -> any_pb2.Any:
    out = any_pb2.Any()
    out.Pack(message)
    return out


def rich_status(code: grpc.StatusCode, message: str, *, reason: str = "",
                metadata: Mapping[str, str] | None = None,
                violations: Iterable[tuple[str, str]] = (), retry_after: float | None = None,
                resource: tuple[str, str] | None = None) -> grpc.Status:
    """A status with the details rowforge's server sends (ErrorInfo, BadRequest, RetryInfo,
    ResourceInfo)."""
    details = []
    if reason:
        details.append(_pack(error_details_pb2.ErrorInfo(reason=reason, domain="rowforge.dev",
                                                         metadata=dict(metadata or {}))))
    violations = list(violations)
    if violations:
        details.append(_pack(error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
            for f, d in violations])))
    if retry_after is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(retry_after * 1e9))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    if resource is not None:
        details.append(_pack(error_details_pb2.ResourceInfo(
            resource_type=resource[0], resource_name=resource[1], description=message)))
    return rpc_status.to_status(status_pb2.Status(
        code=getattr(code_pb2, code.name), message=message, details=details))


async def abort(context: grpc.aio.ServicerContext, status: grpc.Status) -> None:
    """Abort the call with ``status`` (never returns)."""
    await context.abort_with_status(status)
