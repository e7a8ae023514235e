"""The batch domain's API, one object per process: what the BatchJobService
RPCs call, and what a Python caller in the server would use.

Wires the store, the worker, the result recorder, the signals of followers and the retention
sweep together, and checks callers' input before anything is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Sequence

from sqlalchemy.exc import SQLAlchemyError

from rowforge.server.batch import validation
from rowforge.server.batch.model import (
    Job,
    JobConfig,
    JobPage,
    JobState,
    RequestInput,
    RequestStatus,
    Result,
    WatchEvent,
)
from rowforge.server.batch.signals import JobSignals
from rowforge.server.batch.store import DAY_S, BatchStore
from rowforge.server.batch.streams import stream_results, watch_job
from rowforge.server.batch.worker import BatchWorker
from rowforge.server.config import Settings
from rowforge.server.errors import FailedPrecondition, InvalidArgument, RowforgeError, Violations
from rowforge.server.files.store import FileStore
from rowforge.server.metrics import DISABLED, Metrics
from rowforge.server.providers import ModelRegistry, ModelSpec
from rowforge.server.quotas import NO_QUOTAS, Quotas
from rowforge.server.storage.db import Database

log = logging.getLogger("rowforge.server.batch")


class BatchService:
    """Batch jobs of every project.

    Args:
        db / models / settings: The app's database, model registry and settings.
        worker_id: This replica's lease owner name.
        files: The file store (``file://`` images of requests), or None.
    """

    def __init__(self, db: Database, models: ModelRegistry, settings: Settings, *,
                 worker_id: str, files: FileStore | None = None,
                 metrics: Metrics = DISABLED, quotas: Quotas = NO_QUOTAS) -> None:
        self.models = models
        self.quotas = quotas
        self.files = files
        self.retention_s = settings.batch_retention_days * DAY_S
        self.store = BatchStore(db, retention_s=self.retention_s)
        self.signals = JobSignals()
        self.worker = BatchWorker(db, models, settings, worker_id=worker_id,
                                  signals=self.signals, files=self.files,
                                  metrics=metrics)
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Resume work (expired and previous leases are reclaimed) and start the sweeps."""
        await self.worker.start()
        self._sweeper = asyncio.create_task(self._sweep_loop(), name="batch-retention")

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        await self.worker.stop()

    # --- jobs ----------------------------------------------------------------------------

    def _chat_model(self, model_id: str) -> ModelSpec:
        return self.models.require(model_id or self.models.default("chat").id, "chat")

    async def create_job(self, project_id: str, config: JobConfig,
                         idempotency_key: str = "") -> Job:
        """Create a job (or return the one made with the same ``idempotency_key``).

        Raises:
            NotFound: unknown model (``MODEL_NOT_FOUND``).
            InvalidArgument: bad parameters; ``IDEMPOTENCY_KEY_REUSED``.
        """
        spec = self._chat_model(config.model)
        config = dataclasses.replace(config, model=spec.id)
        validation.check_job_config(config, spec, idempotency_key)
        job, _ = await self.store.create_job(project_id, config, idempotency_key)
        return job

    async def add_requests(self, project_id: str, job_id: str,
                           requests: Sequence[RequestInput]) -> tuple[int, int]:
        """Add 1 to 100 requests; returns ``(added, total_requests)``. All or nothing.

        Raises:
            InvalidArgument / AlreadyExists: see :func:`validation.check_requests`; a
                ``file://`` image that is malformed or not an image.
            NotFound: unknown job, or an unknown ``file://`` image.
            FailedPrecondition: the job was submitted or cancelled.
        """
        total, _ = await self._add(project_id, job_id, requests)
        return len(requests), total

    async def _add(self, project_id: str, job_id: str, requests: Sequence[RequestInput]
                   ) -> tuple[int, list[int]]:
        job = await self.store.get_job(project_id, job_id)
        spec = self.models.get(job.config.model)
        validation.check_requests(requests, spec)
        await self._check_files(project_id, requests)
        if self.quotas.batch_requests_per_day:
            used = await self.store.requests_created_since(project_id, time.time() - DAY_S)
            self.quotas.check("batch_requests_per_day", self.quotas.batch_requests_per_day,
                              project_id, used, len(requests), "requests")
        return await self.store.add_requests(project_id, job_id, requests)

    async def add_request_stream(
            self, project_id: str,
            batches: AsyncIterator[tuple[str, Sequence[RequestInput]]]) -> tuple[str, int, int]:
        """Add any number of requests, in batches of 1 to 100 (``(job_id, requests)``: the
        first names the job, later ones repeat it or leave it empty). Returns ``(job_id,
        added, total_requests)``.

        All or nothing: when a batch is refused (or the caller goes away) the batches already
        added are taken back, and the error's metadata says which batch failed.
        """
        job_id = ""
        added: list[int] = []
        total = 0
        index = 0  # of the batch being added: the failing one on error
        try:
            async for batch_job_id, requests in batches:
                if not job_id:
                    if not batch_job_id:
                        raise InvalidArgument.field("job_id", "is required in the first message")
                    job_id = batch_job_id
                elif batch_job_id and batch_job_id != job_id:
                    raise InvalidArgument.field("job_id", "must match the first message's "
                                                f"job_id ({job_id!r}) or be empty")
                total, pks = await self._add(project_id, job_id, requests)
                added.extend(pks)
                index += 1
            if not job_id:
                raise InvalidArgument.field("requests", "the stream sent no message")
        except BaseException as exc:
            if isinstance(exc, RowforgeError):
                exc.metadata.setdefault("message", str(index))
            if added:
                await asyncio.shield(self.store.remove_requests(project_id, job_id, added))
            raise
        return job_id, len(added), total

    async def _check_files(self, project_id: str, requests: Sequence[RequestInput]) -> None:
        files = self.files
        v = Violations()
        invalid: list[int] = []
        reasons: set[str] = set()
        for i, request in enumerate(requests):
            for j, part in enumerate(request.parts):
                if not (part.image_uri or "").startswith("file://"):
                    continue
                if files is None:
                    raise FailedPrecondition(
                        "file:// images need the FileService, which this server lacks",
                        reason="FILES_UNAVAILABLE")
                try:
                    await files.validate_uri(project_id, part.image_uri or "", "image")
                except InvalidArgument as exc:  # name the part among up to 100 requests
                    v.add(f"requests[{i}].content_parts[{j}].image.uri", exc.message)
                    reasons.add(exc.reason)
                    if not invalid or invalid[-1] != i:
                        invalid.append(i)
        validation.raise_for_requests(v, requests, invalid,
                                      reason=reasons.pop() if len(reasons) == 1 else None)

    async def submit(self, project_id: str, job_id: str) -> Job:
        """Start processing (see :meth:`BatchStore.submit`)."""
        job, submitted = await self.store.submit(project_id, job_id)
        if submitted:
            self.worker.wake()
            self.signals.notify(job_id)
        return job

    async def get_job(self, project_id: str, job_id: str) -> Job:
        return await self.store.get_job(project_id, job_id)

    async def list_jobs(self, project_id: str, *, offset: int = 0, limit: int = 0,
                        page_token: str = "", state: JobState | None = None,
                        job_type: str = "") -> JobPage:
        return await self.store.list_jobs(project_id, offset=offset, limit=limit,
                                          page_token=page_token, state=state,
                                          job_type=job_type)

    async def cancel(self, project_id: str, job_id: str) -> Job:
        """Cancel a job: calls in flight here stop at once (other replicas notice at their
        next heartbeat, and cannot record anything meanwhile)."""
        job = await self.store.cancel(project_id, job_id)
        self.worker.cancel_job(job_id)
        self.signals.notify(job_id)
        return job

    async def get_request(self, project_id: str, job_id: str, request_id: str
                          ) -> RequestStatus:
        return await self.store.get_request(project_id, job_id, request_id)

    def results(self, project_id: str, job_id: str, cursor: int = 0, *,
                follow: bool = True) -> AsyncIterator[Result | Job]:
        """Results after ``cursor``, then the job (see :func:`stream_results`)."""
        return stream_results(self.store, self.signals, project_id, job_id, cursor,
                              follow=follow)

    def watch(self, project_id: str, job_id: str, cursor: int = 0
              ) -> AsyncIterator[WatchEvent]:
        """Events after ``cursor`` until the job ends (see :func:`watch_job`)."""
        return watch_job(self.store, self.signals, project_id, job_id, cursor)

    # --- retention -----------------------------------------------------------------------

    async def _sweep_loop(self) -> None:
        interval = min(3600.0, max(1.0, self.retention_s / 4))
        while True:
            await asyncio.sleep(interval)
            try:
                purged = await self.store.purge_expired()
                if purged:
                    log.info("purged the results of %d expired batch jobs", purged)
            except (SQLAlchemyError, OSError):
                log.exception("purging expired batch results failed")

