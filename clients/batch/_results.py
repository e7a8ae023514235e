"""Result and event objects of the AjaxAI-shaped batch API."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rowforge.clients.batch_jobs import BatchResult, RequestState


class _Obj(BaseModel):
    model_config = ConfigDict(extra="allow", arbitrary_types_allowed=True)


class TextResponse(_Obj):
    """A response without a parsed model: ``.text`` (and ``.json`` for structured output)."""

    text: str = ""
    json_value: Any = Field(default=None, alias="json")


class RequestRef(_Obj):
    """The request a result belongs to."""

    request_id: str
    metadata: dict[str, Any] = Field(default_factory=dict)


class RequestSummary(_Obj):
    """How a request ended: ``status`` ("succeeded", "failed", "cancelled"), a human
    ``status_message``, attempts and the error's code/reason when it failed."""

    status: str
    status_message: str = ""
    attempts: int = 0
    error_code: str = ""
    error_reason: str = ""


class UsageStats(_Obj):
    """Token usage of a request (the seed's names and OpenAI's)."""

    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0

    @property
    def prompt_tokens(self) -> int:
        return self.input_tokens

    @property
    def completion_tokens(self) -> int:
        return self.output_tokens


class BatchRequestResult(_Obj):
    """One result of ``job.get_results()``.

    ``response`` is the parsed ``output_model`` instance when one is known and the answer
    validates, else a :class:`TextResponse` (``.text``); ``response_model`` is the parsed
    instance or ``None``.
    """

    request: RequestRef
    response: Any
    response_model: Any = None
    response_json: Any = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    summary: RequestSummary
    usage: UsageStats = Field(default_factory=UsageStats)
    sequence: int = 0

    @property
    def request_id(self) -> str:
        return self.request.request_id

    @property
    def succeeded(self) -> bool:
        return self.summary.status == RequestState.SUCCEEDED.value


def _parse(model: type[BaseModel], result: BatchResult) -> tuple[Any, str]:
    """The answer as ``model``, or ``(None, why not)``."""
    payload = result.response_json
    try:
        if payload is None:
            payload = json.loads(result.response_text)
        return model.model_validate(payload), ""
    except (ValueError, ValidationError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        return None, f"response does not match {model.__name__}: {first}"


def build_result(result: BatchResult, output_model: type[BaseModel] | None, *,
                 model_as_response: bool = True) -> BatchRequestResult:
    """A :class:`BatchRequestResult` from a service result, parsed into ``output_model``
    (``response_model``); ``model_as_response`` also makes the parsed model the
    ``response`` (else ``response`` stays a :class:`TextResponse`)."""
    state = result.state.value
    message = ""
    if result.error is not None:
        message = result.error.message or result.error.reason
    elif result.state == RequestState.SUCCEEDED:
        message = "ok"
    elif result.state == RequestState.CANCELLED:
        message = "cancelled"
    parsed = None
    if output_model is not None and result.state == RequestState.SUCCEEDED:
        parsed, problem = _parse(output_model, result)
        if problem:
            message = problem
    text = TextResponse(text=result.response_text, json=result.response_json)
    usage = result.usage or {}
    return BatchRequestResult(
        request=RequestRef(request_id=result.request_id, metadata=result.metadata),
        response=parsed if parsed is not None and model_as_response else text,
        response_model=parsed,
        response_json=result.response_json, metadata=result.metadata,
        summary=RequestSummary(
            status=state, status_message=message, attempts=result.attempts,
            error_code=result.error.code if result.error else "",
            error_reason=result.error.reason if result.error else ""),
        usage=UsageStats(input_tokens=usage.get("prompt_tokens", 0),
                         output_tokens=usage.get("completion_tokens", 0),
                         total_tokens=usage.get("total_tokens", 0)),
        sequence=result.sequence)
