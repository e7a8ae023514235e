"""The composition root (:class:`App`), the grpc.aio server, and its lifecycle."""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from rowforge.server import memory, tracing
from rowforge.server.auth import Authenticator, ensure_default_project
from rowforge.server.batch.api import BatchService
from rowforge.server.config import ConfigError, Settings
from rowforge.server.files.blobs import BlobStore, LocalBlobStore
from rowforge.server.files.s3_blobs import S3BlobStore
from rowforge.server.files.store import FileStore, Limits
from rowforge.server.files.thumbnails import ThumbnailCache
from rowforge.server.idempotency import IdempotencyKeys
from rowforge.server.interceptors import RowforgeInterceptor
from rowforge.server.knowledge.base import Knowledge, KnowledgeSearch
from rowforge.server.knowledge.embed_file import FileEmbedder
from rowforge.server.loop import freeze_startup_heap, loop_name
from rowforge.server.metrics import Metrics
from rowforge.server.providers import ModelRegistry, default_providers
from rowforge.server.quotas import Quotas
from rowforge.server.reflection import enable_reflection
from rowforge.server.replicas import Replicas
from rowforge.server.sandbox import SandboxLimits, SandboxPool
from rowforge.server.services import batch_job, file, knowledge, model, table
from rowforge.server.services.batch_job import BatchJobServicer
from rowforge.server.services.file import FileServicer
from rowforge.server.services.knowledge import KnowledgeServicer
from rowforge.server.services.model import ModelServicer
from rowforge.server.services.table import TableServicer
from rowforge.server.storage.db import Database
from rowforge.server.tables.engine import LazySandbox, RowEngine
from rowforge.server.tables.jobs import TableJobs
from rowforge.server.tables.store import TableStore
from rowforge.server.tls import ServerTLS
from rowforge.server.usage import UsageMeter
from rowforge.v1 import (
    batch_job_service_pb2_grpc,
    file_service_pb2_grpc,
    knowledge_service_pb2_grpc,
    model_service_pb2_grpc,
    table_service_pb2_grpc,
)

log = logging.getLogger("rowforge.server")


class ListenError(OSError):
    """The server cannot bind its address (port taken, address not on this machine)."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(f"cannot listen on {host}:{port}: the port is in use or the address "
                         "is not on this machine; stop the other server or choose another "
                         "port with --port (0 picks a free one)")
        self.host, self.port = host, port


class App:
    """The composition root: every component of the process, built here with explicit
    arguments in the one order that works, started in that order and stopped in reverse.

    What builds what::

        settings -> db, auth, models, providers (+ usage: the daily token quota)
        files     = FileStore(db, blobs, thumbnails)
        tables    = TableStore(db, models, files)
        search    = KnowledgeSearch(db, indexes dir, tables, models)      # indexes, RAG
        engine    = RowEngine(tables, models, providers, files, retriever=search.rag,
                              sandbox=LazySandbox)
        knowledge = Knowledge(search, FileEmbedder(tables, models, files, generator=engine))
        batch     = BatchService(db, models, settings, files)
        files asks tables and batch before a delete (reference finders)

    The gRPC services (:func:`add_services`) only translate over these components.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.data_dir = Path(settings.data_dir).resolve()
        self.db = Database(settings.resolved_database_url)
        self.auth = Authenticator(self.db, enabled=settings.auth)
        self.worker_id = settings.worker_id or f"{os.uname().nodename}-{os.getpid()}"
        self.models = ModelRegistry.from_config(list(settings.models), defaults={
            "chat": settings.default_chat_model,
            "embed": settings.default_embed_model,
            "rerank": settings.default_rerank_model,
        })
        self.metrics = Metrics(settings.metrics)
        self.tracer_provider = tracing.configure(settings.tracing)
        # Every model call of this process goes through these backends: the openai
        # transport's pools hold as many connections per upstream as calls may be in flight.
        self.providers = default_providers()
        self.providers.metrics = self.metrics
        self.providers.configure(connections=settings.model_concurrency
                                 + settings.batch_workers)
        self.idempotency = IdempotencyKeys(self.db)
        self.quotas = Quotas.from_settings(settings)
        self.usage = UsageMeter(self.db, self.quotas.provider_tokens_per_day)
        self.providers.usage = self.usage
        self.files = _file_store(settings, self.db, self.data_dir / "files", self.quotas)
        self.tables = TableStore(self.db, models=self.models, files=self.files,
                                 quotas=self.quotas, owner=self.worker_id)
        self.search = KnowledgeSearch(db=self.db, index_dir=self.data_dir / "indexes",
                                      tables=self.tables, models=self.models,
                                      memory_budget=settings.knowledge_index_memory_bytes,
                                      metrics=self.metrics)
        self.sandbox = LazySandbox(functools.partial(_sandbox_pool, settings, self.data_dir))
        self.engine = RowEngine(store=self.tables, models=self.models,
                                providers=self.providers, settings=settings,
                                files=self.files, retriever=self.search.rag,
                                sandbox=self.sandbox, metrics=self.metrics)
        self.knowledge = Knowledge(
            self.search, FileEmbedder(tables=self.tables, models=self.models, files=self.files,
                                      generator=self.engine), self.tables, self.metrics)
        self.batch = BatchService(self.db, self.models, settings, worker_id=self.worker_id,
                                  files=self.files, metrics=self.metrics, quotas=self.quotas)
        # Table jobs run on the batch worker: it hands their rows to the tables domain.
        self.table_jobs = TableJobs(self.tables, self.engine, self.batch)
        self.batch.worker.table_rows = self.table_jobs
        self.files.add_reference_finder(self.tables.file_references)
        self.files.add_reference_finder(self.batch.store.file_references)
        # Knowledge indexes need no take-over: they catch up from the shared change feed.
        self.replicas = Replicas(self.db, self.worker_id, lease_s=settings.replica_lease_s,
                                 take_over=[self._finish_cells, self.batch.worker.take_over,
                                            self.table_jobs.queuer.resume])

    async def _finish_cells(self, replica_id: str) -> None:
        count = await self.tables.finish_interrupted_cells(owner=replica_id)
        if count:
            log.warning("marked %d cells of dead replica %s ERROR interrupted", count,
                        replica_id)

    def drain(self) -> None:
        """Shutdown begins (before the grace period): streams that only follow (WatchJob,
        StreamResults) end at once, so they do not hold the grace period."""
        try:
            self.batch.signals.close()
        except Exception:
            log.exception("error while draining")

    async def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.data_dir, 0o700)
        log.info("schema", extra={"state": await self.db.prepare_schema()})
        await ensure_default_project(self.db)
        # litellm's import and warm-up (seconds of CPU) run in a thread, before health turns
        # SERVING, and only when a configured model uses it; no call pays for it later.
        await self.providers.start(self.models.specs)
        await self.tables.start()
        await self.sandbox.sweep_leftovers()  # the pool itself starts on first use
        await self.search.start()
        await self.files.start()
        await self.replicas.start()  # before new work: may finish a previous run's with our id
        await self.batch.start()
        await self.table_jobs.start()
        await self.auth.start()
        await self.usage.start()
        if self.metrics.enabled:
            self.metrics.serve(self.settings.metrics_host, self.settings.metrics_port)

    async def stop(self) -> None:
        # The engine's clean-up writes finish before the store closes.
        for step in (self.auth.stop, self.table_jobs.stop, self.batch.stop, self.search.stop, self.engine.close,
                     self.sandbox.close, self.tables.close, self.providers.aclose,
                     self.usage.stop, self.files.close, self.replicas.stop):
            try:
                await step()
            except Exception:
                log.exception("error while stopping")
        await self.db.close()
        self.metrics.close()
        tracing.shutdown(self.tracer_provider)


def _file_store(settings: Settings, db: Database, root: Path, quotas: Quotas) -> FileStore:
    idle = settings.upload_idle_timeout_s
    stale_after_s = max(idle * 2, 60.0) + 60.0
    blobs: BlobStore
    if settings.files_backend == "s3":
        blobs = S3BlobStore(settings.files_bucket, prefix=settings.files_prefix,
                            endpoint_url=settings.files_endpoint_url,
                            region=settings.files_region,
                            part_size=settings.files_part_mb * 1024 * 1024,
                            stale_after_s=stale_after_s, locker=db.advisory_lock)
    else:
        blobs = LocalBlobStore(Path(settings.files_dir).expanduser() if settings.files_dir
                               else root, stale_after_s=stale_after_s)
    # Thumbnails stay a local cache on every backend: derived from the content, per replica.
    return FileStore(db, blobs, ThumbnailCache(root / "thumbs"),
                     limits=Limits.from_settings(settings), idle_timeout_s=idle, quotas=quotas)


def _sandbox_pool(settings: Settings, data_dir: Path) -> SandboxPool:
    """A Python-column sandbox pool configured from the settings (not started)."""
    limits = SandboxLimits(timeout_s=settings.sandbox_timeout_s,
                           cpu_s=max(1, math.ceil(settings.sandbox_timeout_s)),
                           memory_mb=settings.sandbox_memory_mb)
    return SandboxPool(workers=settings.sandbox_workers, limits=limits,
                       forbidden_paths=[str(data_dir)], network=settings.effective_sandbox_network,
                       work_dir=data_dir / "sandbox")


def add_services(server: grpc.aio.Server, app: App) -> list[str]:
    """Serve every rowforge.v1 service over the app's components; return their names."""
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(
        ModelServicer(app.models, app.files), server)
    table_service_pb2_grpc.add_TableServiceServicer_to_server(
        TableServicer(app.tables, app.engine, app.idempotency, table_jobs=app.table_jobs),
        server)
    knowledge_service_pb2_grpc.add_KnowledgeServiceServicer_to_server(
        KnowledgeServicer(app.knowledge), server)
    file_service_pb2_grpc.add_FileServiceServicer_to_server(FileServicer(app.files), server)
    batch_job_service_pb2_grpc.add_BatchJobServiceServicer_to_server(
        BatchJobServicer(app.batch), server)
    return [model.SERVICE_NAME, table.SERVICE_NAME, knowledge.SERVICE_NAME, file.SERVICE_NAME,
            batch_job.SERVICE_NAME]


class Server:
    """The grpc.aio server around an :class:`App`, with health and reflection."""

    def __init__(self, app: App) -> None:
        self.app = app
        settings = app.settings
        options = [
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            ("grpc.max_send_message_length", settings.max_message_bytes),
            ("grpc.so_reuseport", int(settings.reuse_port)),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
            ("grpc.keepalive_time_ms", int(settings.keepalive_time_s * 1000)),
        ]
        if settings.max_connection_age_s > 0:
            options += [
                ("grpc.max_connection_age_ms", int(settings.max_connection_age_s * 1000)),
                ("grpc.max_connection_age_grace_ms",
                 int(settings.max_connection_age_grace_s * 1000)),
            ]
        self.tls = ServerTLS.from_settings(settings)
        # The one interceptor also makes each RPC's span when tracing is on.
        interceptors: list[Any] = [RowforgeInterceptor(
            app.auth, max_concurrent_rpcs=settings.max_concurrent_rpcs, metrics=app.metrics)]
        self.grpc = grpc.aio.server(interceptors=interceptors, options=options)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.grpc)
        self.service_names = add_services(self.grpc, app)
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
            address = f"{settings.host}:{settings.port}"
            self.port = (self.grpc.add_secure_port(address, self.tls.credentials())
                         if self.tls is not None else self.grpc.add_insecure_port(address))
        except RuntimeError:  # grpc raises this (or returns 0) when it cannot bind
            self.port = 0
        if not self.port:
            raise ListenError(settings.host, settings.port)
        await self.grpc.start()
        for name in ["", *self.service_names]:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        return self.port

    async def stop(self, grace: float | None = None) -> None:
        """Drain: NOT_SERVING (still serving for ``drain_delay_s``, while health watchers
        move away), stop accepting, let calls finish within ``grace``, cancel."""
        await self.health.enter_graceful_shutdown()
        if self.app.settings.drain_delay_s > 0:
            await asyncio.sleep(self.app.settings.drain_delay_s)
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
    if settings.memory_trim_s > 0:
        memory.configure()  # before the app's threads: glibc's arena cap applies to them
    server = Server(App(settings))
    port = await server.start()
    frozen = freeze_startup_heap() if settings.gc_freeze else 0
    log.info("listening", extra={"address": f"{settings.host}:{port}",
                                 "database": server.app.db.dialect, "auth": settings.auth,
                                 "tls": "mutual" if server.tls and server.tls.mutual
                                 else bool(server.tls),
                                 "loop": loop_name(), "gcFrozen": frozen})
    if ready:
        ready(port)
    trimmer = None
    if settings.memory_trim_s > 0:
        trimmer = asyncio.create_task(memory.trim_periodically(settings.memory_trim_s))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if server.tls is not None:
        loop.add_signal_handler(signal.SIGHUP, server.tls.reload)
    await stop.wait()
    if trimmer is not None:
        trimmer.cancel()
    log.info("shutting down", extra={"grace_s": settings.grace_period_s})
    await server.stop()
    log.info("stopped")
