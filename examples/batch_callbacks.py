"""Callbacks, the AjaxAI SDK's "Callbacks" section: a basic callback, structured callback
processing, and a resilient callback whose errors are handled (plus one that is not: the SDK
logs it and keeps delivering).

The seed's code as written; only the imports changed and types
annotated (``make lint`` runs ``mypy --strict`` on every example). As in the seed, nothing calls
get_results(): each job's callbacks run on a background thread until the job ends.
"""
# ruff: noqa: I001, UP006, UP035

from rowforge.clients.batch import create_batch_job, AjaxAiRequestItem
from rowforge.clients.batch.events import BatchRequestEvent
from pydantic import BaseModel
from typing import List


# -- Basic callback setup ------------------------------------------------------------------------
def my_callback_function(event: BatchRequestEvent) -> None:
    if event.event_type == "request_succeeded" and event.result is not None:
        print(f"Request {event.request_id} succeeded with response: {event.result.response.text}")
    elif event.event_type == "request_failed":
        print(f"Request {event.request_id} failed: {event.error}")


job = create_batch_job(api_key="your_api_key")
job.on_request_complete(my_callback_function)

# Add requests and submit as usual
request = AjaxAiRequestItem(request_id="cb_req_1").add_text("Callback test")
job.add_request(request)
job.submit()


# -- Structured callback processing ------------------------------------------------------------
class DocumentSummary(BaseModel):
    title: str
    summary_text: str
    keywords: List[str]


def process_document_summary(event: BatchRequestEvent) -> None:
    if (event.event_type == "request_succeeded" and event.result is not None
            and isinstance(event.result.response_model, DocumentSummary)):
        summary: DocumentSummary = event.result.response_model
        print(f"Summarized document '{summary.title}': {summary.summary_text}")
    elif event.event_type == "request_failed":
        print(f"Failed to summarize {event.request_id}: {event.error}")


job = create_batch_job(api_key="your_api_key")
job.on_request_complete(process_document_summary)

request = AjaxAiRequestItem(
    request_id="doc_summary_1",
    output_model=DocumentSummary
).add_text("Summarize this long document about AI and machine learning...")

job.add_request(request)
job.submit()


# -- Error handling in callbacks ----------------------------------------------------------------
def resilient_callback(event: BatchRequestEvent) -> None:
    try:
        if event.event_type == "request_succeeded":
            # Simulate a processing error
            if "error_trigger" in event.request.request_id:
                raise ValueError("Simulated processing error in callback")
            print(f"Successfully processed {event.request_id}")
        elif event.event_type == "request_failed":
            print(f"Request {event.request_id} failed: {event.error}")
    except Exception as e:
        print(f"An error occurred in callback for request {event.request_id}: {e}")
        # Log the error to your monitoring system
        # send_error_to_sentry(e, request_id=event.request_id)


def careless_callback(event: BatchRequestEvent) -> None:
    # Not in the seed: an unhandled error is logged by the SDK and delivery goes on.
    if "error_trigger" in event.request.request_id:
        raise RuntimeError("unhandled error in a callback")


job = create_batch_job(api_key="your_api_key")
job.on_request_complete(resilient_callback)
job.on_request_complete(careless_callback)

job.add_request(AjaxAiRequestItem(request_id="success_req").add_text("This should succeed"))
job.add_request(AjaxAiRequestItem(request_id="error_trigger_req").add_text("This will trigger a callback error"))
job.submit()
