"""The AjaxAI SDK's monitoring, error handling and recovery snippets: manual status checks,
typed errors with retry, and picking a job up again by id with ``get_batch_job``.

The seed's code as written; only the imports changed (``process_result`` is defined here) and
types annotated (``make lint`` runs ``mypy --strict`` on every example).
"""
# ruff: noqa: I001

import time
from rowforge.clients.batch import create_batch_job, get_batch_job, AjaxAiRequestItem, BatchRequestResult
from rowforge.clients.batch.exceptions import (
    AjaxAiApiError,  # Base API error
    AjaxAiAuthorizationError,  # Invalid API key (401/403)
    AjaxAiRateLimitError,  # Rate limit exceeded (429)
    AjaxAiJobNotFoundError,  # Job not found (404)
      # Server error (5xx)
)

job = create_batch_job(api_key="your_api_key")
for i in range(3):
    job.add_request(AjaxAiRequestItem(request_id=f"req_{i + 1}").add_text(f"Question {i + 1}"))

# Retry Logic
max_retries = 3
for attempt in range(max_retries):
    try:
        response = job.submit()
        break
    except AjaxAiRateLimitError:
        if attempt == max_retries - 1:
            raise
        wait_time = 2 ** attempt  # Exponential backoff
        time.sleep(wait_time)

# Check overall progress
status = job.get_state()
metrics = job.get_metrics()
print(f"Status: {status}")
print(f"Progress: {metrics.processed_requests}/{metrics.total_requests}")

# Check individual requests
request_status = job.get_request_state("req_1")
print(f"req_1: {request_status}")

job.wait()


def process_result(result: BatchRequestResult) -> None:
    print(f"{result.request.request_id}: {result.summary.status}")


# Recover from callback failure
job = get_batch_job(api_key="your_api_key", job_id=job.job_id)
if job.get_state() == "succeeded":
    # Manually process results
    for result in job.get_results(output_model=None):
        process_result(result)

try:
    get_batch_job(api_key="your_api_key", job_id="failed_callback_job")
except AjaxAiJobNotFoundError:
    print("Job not found")
except AjaxAiAuthorizationError:
    print("Invalid API key")
except AjaxAiApiError as e:
    print(f"API error: {e}")
