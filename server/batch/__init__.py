"""Batch jobs: durable, rate-limited, resumable LLM batch processing (no protobuf here).

Public API::

    service = BatchService(db, models, settings, worker_id="host-1", files=files)
    await service.start()
    job = await service.create_job(project, JobConfig(model="rowforge/chat"))
    await service.add_requests(project, job.id, [RequestInput("r1", (ContentPart("Hi"),))])
    await service.submit(project, job.id)
    async for item in service.results(project, job.id, cursor=0):   # Result..., then Job
        ...
    async for event in service.watch(project, job.id):               # WatchEvent
        ...

Modules: :mod:`.model` (data), :mod:`.validation`, :mod:`.store` (jobs, requests, results),
:mod:`.queue` (claims and leases), :mod:`.recorder` (batched result writes),
:mod:`.ratelimit`, :mod:`.calls` (one model call), :mod:`.worker`, :mod:`.streams`,
:mod:`.signals`, :mod:`.service` (the facade).
"""

from rowforge.server.batch.api import BatchService
from rowforge.server.batch.model import (
    ContentPart,
    ErrorDetail,
    EventType,
    Job,
    JobConfig,
    JobMetrics,
    JobPage,
    JobState,
    RequestInput,
    RequestState,
    RequestStatus,
    Result,
    WatchEvent,
)

__all__ = [
    "BatchService",
    "ContentPart",
    "ErrorDetail",
    "EventType",
    "Job",
    "JobConfig",
    "JobMetrics",
    "JobPage",
    "JobState",
    "RequestInput",
    "RequestState",
    "RequestStatus",
    "Result",
    "WatchEvent",
]
