"""The application: shared components, the grpc.aio server, and its lifecycle."""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from rowforge.server import memory
from rowforge.server.auth import Authenticator, ensure_default_project
from rowforge.server.config import ConfigError, Settings
from rowforge.server.interceptors import RowforgeInterceptor
from rowforge.server.loop import freeze_startup_heap, loop_name
from rowforge.server.reflection import enable_reflection
from rowforge.server.storage.db import Database

log = logging.getLogger("rowforge.server")

#: Service modules in ``rowforge.server.services``; each has ``register(server, app) -> str``.
SERVICE_MODULES = ("model", "table", "knowledge", "file", "batch_job")

Hook = Callable[[], Awaitable[None]]


class ListenError(OSError):
    """The server cannot bind its address (port taken, address not on this machine)."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(f"cannot listen on {host}:{port}: the port is in use or the address "
                         "is not on this machine; stop the other server or choose another "
                         "port with --port (0 picks a free one)")
        self.host, self.port = host, port


class App:
    """Everything a request may need, created once per process.

    Domain components attach themselves here (``app.files``, ``app.tables`` ...) when their
    service registers; ``on_start`` / ``on_stop`` hooks run in order / in reverse order.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.data_dir = Path(settings.data_dir).resolve()
        self.db = Database(settings.resolved_database_url)
        self.auth = Authenticator(self.db, enabled=settings.auth)
        self.worker_id = settings.worker_id or f"{os.uname().nodename}-{os.getpid()}"
        self._start_hooks: list[Hook] = []
        self._stop_hooks: list[Hook] = []
        self._drain_hooks: list[Callable[[], None]] = []
        from rowforge.server.providers.registry import ModelRegistry

        self.models = ModelRegistry.from_config(list(settings.models), defaults={
            "chat": settings.default_chat_model,
            "embed": settings.default_embed_model,
            "rerank": settings.default_rerank_model,
        })
        from rowforge.server.providers import default_providers

        # Every model call of this process goes through these backends: the openai
        # transport's pools hold as many connections per upstream as calls may be in flight.
        self.providers = default_providers()
        self.providers.configure(connections=settings.model_concurrency
                                 + settings.batch_workers)

    def on_start(self, hook: Hook) -> None:
        self._start_hooks.append(hook)

    def on_stop(self, hook: Hook) -> None:
        self._stop_hooks.append(hook)

    def on_drain(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` when shutdown begins, before the grace period: it ends streams that
        only follow (WatchJob, StreamResults) at once, so they do not hold the grace period."""
        self._drain_hooks.append(hook)

    def drain(self) -> None:
        for hook in self._drain_hooks:
            try:
                hook()
            except Exception:
                log.exception("error while draining")

    async def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.data_dir, 0o700)
        await self.db.create_schema()
        await ensure_default_project(self.db)
        # litellm's import and warm-up (seconds of CPU) run in a thread, before health turns
        # SERVING, and only when a configured model uses it; no call pays for it later.
        await self.providers.start(self.models.specs)
        for hook in self._start_hooks:
            await hook()

    async def stop(self) -> None:
        for hook in reversed(self._stop_hooks):
            try:
                await hook()
            except Exception:
                log.exception("error while stopping")
        await self.providers.aclose()
        await self.db.close()


class Server:
    """The grpc.aio server around an :class:`App`, with health and reflection."""

    def __init__(self, app: App) -> None:
        self.app = app
        settings = app.settings
        options = [
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            ("grpc.max_send_message_length", settings.max_message_bytes),
            ("grpc.so_reuseport", 0),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ]
        self.grpc = grpc.aio.server(interceptors=[RowforgeInterceptor(app.auth)], options=options)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.grpc)
        self.service_names: list[str] = []
        for module in SERVICE_MODULES:
            mod = importlib.import_module(f"rowforge.server.services.{module}")
            self.service_names.append(mod.register(self.grpc, app))
        if settings.reflection:
            enable_reflection([*self.service_names, health.SERVICE_NAME], self.grpc)
        self.port = 0

    async def start(self) -> int:
        """Start serving; return the bound port. Health turns SERVING once everything is up."""
        settings = self.app.settings
        for name in ["", *self.service_names]:
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.app.start()
        try:
            self.port = self.grpc.add_insecure_port(f"{settings.host}:{settings.port}")
        except RuntimeError:  # grpc raises this (or returns 0) when it cannot bind
            self.port = 0
        if not self.port:
            raise ListenError(settings.host, settings.port)
        await self.grpc.start()
        for name in ["", *self.service_names]:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        return self.port

    async def stop(self, grace: float | None = None) -> None:
        """Drain: NOT_SERVING, stop accepting, let calls finish within ``grace``, cancel."""
        await self.health.enter_graceful_shutdown()
        self.app.drain()
        await self.grpc.stop(self.app.settings.grace_period_s if grace is None else grace)
        await self.app.stop()


def check_exposure(settings: Settings) -> None:
    """Refuse to serve without auth on a non-loopback address unless --insecure."""
    if not settings.auth and not settings.is_loopback and not settings.insecure:
        raise ConfigError(
            f"refusing to listen on {settings.host} with auth off: enable auth "
            "(--auth or ROWFORGE_AUTH=true) or pass --insecure")


async def serve(settings: Settings, *, ready: Callable[[int], None] | None = None) -> None:
    """Run until SIGTERM/SIGINT, then shut down gracefully."""
    check_exposure(settings)
    server = Server(App(settings))
    port = await server.start()
    frozen = freeze_startup_heap() if settings.gc_freeze else 0
    log.info("listening", extra={"address": f"{settings.host}:{port}",
                                 "database": server.app.db.dialect, "auth": settings.auth,
                                 "loop": loop_name(), "gcFrozen": frozen})
    if ready:
        ready(port)
    trimmer = None
    if settings.memory_trim_s > 0:
        memory.configure()
        trimmer = asyncio.create_task(memory.trim_periodically(settings.memory_trim_s))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    if trimmer is not None:
        trimmer.cancel()
    log.info("shutting down", extra={"grace_s": settings.grace_period_s})
    await server.stop()
    log.info("stopped")
