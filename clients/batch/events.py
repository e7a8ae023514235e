"""``BatchRequestEvent``: what ``job.on_request_complete`` callbacks receive (the AjaxAI SDK's
``ajaxai.classes.events``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from rowforge.clients.batch._results import BatchRequestResult, RequestRef

__all__ = ["BatchRequestEvent"]


class BatchRequestEvent(BaseModel):
    """A request of a job finished.

    Attributes:
        event_type: ``"request_succeeded"``, ``"request_failed"`` or ``"request_cancelled"``.
        job_id: The job.
        request_id: The request.
        request: The request (``.request_id``, ``.metadata``).
        result: The result (``.response.text``, ``.response_model`` ...).
        error: Why it failed ("" otherwise).
        sequence: Position in the job's event stream.
    """

    model_config = ConfigDict(extra="allow", arbitrary_types_allowed=True)

    event_type: str
    job_id: str
    request_id: str
    request: RequestRef
    result: BatchRequestResult | None = None
    error: str = ""
    sequence: int = 0
