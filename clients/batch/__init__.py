"""Batch jobs in the AjaxAI SDK's shape (the seed's examples run with the import changed)::

    from rowforge.clients.batch import create_batch_job, AjaxAiRequestItem

    job = create_batch_job(api_key="...")        # or ROWFORGE_TOKEN / AJAXAI_API_KEY
    job.add_request(AjaxAiRequestItem(request_id="req_1").add_text("Hello world"))
    job.submit()
    for result in job.get_results(output_model=None):
        print(result.response.text)

The RPC-level client is ``RowForge().batch`` (:mod:`rowforge.clients.batch_jobs`).
"""

from rowforge.clients.batch._job import (
    AddRequestResponse,
    AjaxAiBatchJob,
    AjaxAiClient,
    AjaxAiRequestItem,
    JobPerformanceMetrics,
    SubmitJobResponse,
    create_batch_job,
    get_batch_job,
)
from rowforge.clients.batch._results import (
    BatchRequestResult,
    RequestRef,
    RequestSummary,
    TextResponse,
    UsageStats,
)
from rowforge.clients.batch.events import BatchRequestEvent
from rowforge.clients.batch.exceptions import (
    AjaxAiApiError,
    AjaxAiAuthorizationError,
    AjaxAiJobNotFoundError,
    AjaxAiRateLimitError,
    AjaxAiServerError,
    InvalidBatchRequestsError,
)
from rowforge.clients.batch_jobs import JobMetrics, JobState, RequestState

#: Short names.
BatchJob = AjaxAiBatchJob
RequestItem = AjaxAiRequestItem

__all__ = [
    "AddRequestResponse",
    "AjaxAiApiError",
    "AjaxAiAuthorizationError",
    "AjaxAiBatchJob",
    "AjaxAiClient",
    "AjaxAiJobNotFoundError",
    "AjaxAiRateLimitError",
    "AjaxAiRequestItem",
    "AjaxAiServerError",
    "BatchJob",
    "BatchRequestEvent",
    "BatchRequestResult",
    "InvalidBatchRequestsError",
    "JobMetrics",
    "JobPerformanceMetrics",
    "JobState",
    "RequestItem",
    "RequestRef",
    "RequestState",
    "RequestSummary",
    "SubmitJobResponse",
    "TextResponse",
    "UsageStats",
    "create_batch_job",
    "get_batch_job",
]
