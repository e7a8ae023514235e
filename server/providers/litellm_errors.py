"""litellm (and openai/httpx) exceptions -> :mod:`rowforge.server.errors`.

| provider error | our error | reason |
|---|---|---|
| ``RateLimitError`` (429) | ``ResourceExhausted`` (``retry_after`` from headers) | ``PROVIDER_RATE_LIMITED`` |
| ``Timeout``, ``asyncio``/``httpx`` timeouts | ``Unavailable`` | ``PROVIDER_TIMEOUT`` |
| malformed body (JSON decode errors, ``APIResponseValidationError``) | ``Unavailable`` | ``PROVIDER_BAD_RESPONSE`` |
| ``ServiceUnavailableError``, ``InternalServerError``, ``BadGatewayError``, 5xx ``APIError``, ``APIConnectionError``, aiohttp connection errors | ``Unavailable`` | ``PROVIDER_UNAVAILABLE`` |
| ``NotFoundError`` | ``NotFound`` | ``MODEL_NOT_FOUND`` |
| ``ContextWindowExceededError``, or a 400 whose message says so | ``InvalidArgument`` | ``CONTEXT_WINDOW_EXCEEDED`` |
| ``ContentPolicyViolationError`` | ``InvalidArgument`` | ``CONTENT_POLICY_VIOLATION`` |
| ``BadRequestError``, ``UnprocessableEntityError`` | ``InvalidArgument`` | ``PROVIDER_BAD_REQUEST`` |
| ``AuthenticationError``, ``PermissionDeniedError`` | ``Internal`` (our key, not the caller's) | ``PROVIDER_AUTH_FAILED`` |
| anything else | ``Internal`` | ``PROVIDER_ERROR`` |

Classes are matched by name along the exception's MRO, so this module needs no litellm import
(and works for the openai SDK's own classes and the ``openai`` transport's HTTP errors too).
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import re
import time
from collections.abc import Mapping
from typing import Any

from rowforge.server.errors import (
    Aborted,
    Internal,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    RowforgeError,
    Unavailable,
)

RETRYABLE = (ResourceExhausted, Unavailable, Aborted)
_PREFIX = re.compile(r"^(litellm\.\w+:\s*)+|^\w+Exception - ", re.IGNORECASE)
_MAX_DETAIL = 300


def map_provider_error(exc: BaseException, *, model: str = "") -> RowforgeError:
    """The domain error for a failed provider call (``exc`` itself when already one).

    Args:
        exc: What litellm (or openai/httpx underneath) raised.
        model: Our model id, for the message and ``ErrorInfo`` metadata.
    """
    if isinstance(exc, RowforgeError):
        return exc
    names = {cls.__name__ for cls in type(exc).__mro__}
    status = _status(exc)
    detail = _detail(exc)
    meta: dict[str, Any] = {"model": model}
    if status:
        meta["providerStatus"] = status
    subject = f"model {model!r}" if model else "the model"

    if "RateLimitError" in names or status == 429:
        wait = retry_after_seconds(exc)
        if wait is not None:
            meta["retryAfterSeconds"] = f"{wait:g}"
        hint = f"retry in {wait:g}s" if wait is not None else "retry later"
        return ResourceExhausted(f"The provider of {subject} is rate limiting requests; {hint}.",
                                 reason="PROVIDER_RATE_LIMITED", metadata=meta, retry_after=wait)
    if names & {"Timeout", "APITimeoutError", "TimeoutException", "TimeoutError"} \
            or isinstance(exc, asyncio.TimeoutError):
        return Unavailable(f"The provider of {subject} did not answer in time; retry later.",
                           reason="PROVIDER_TIMEOUT", metadata=meta,
                           retry_after=retry_after_seconds(exc))
    if names & {"APIResponseValidationError", "ProviderStreamError"} or _malformed(exc):
        return Unavailable(f"The provider of {subject} sent a malformed response; retry later.",
                           reason="PROVIDER_BAD_RESPONSE", metadata=meta)
    if "ContextWindowExceededError" in names or (
            status in (400, 413) and context_window_exceeded(f"{detail} {getattr(exc, 'code', '')}")):
        return InvalidArgument.field(
            "messages", f"the prompt is longer than {subject} accepts ({detail})",
            reason="CONTEXT_WINDOW_EXCEEDED", metadata=meta)
    if "ContentPolicyViolationError" in names:
        return InvalidArgument(f"The provider of {subject} refused the content: {detail}",
                               reason="CONTENT_POLICY_VIOLATION", metadata=meta)
    if names & {"AuthenticationError", "PermissionDeniedError"} or status in (401, 403):
        return Internal(f"The server's credentials for {subject} were rejected by the provider.",
                        reason="PROVIDER_AUTH_FAILED", metadata=meta)
    if "NotFoundError" in names or status == 404:
        return NotFound(f"The provider does not know {subject}: {detail}",
                        reason="MODEL_NOT_FOUND", metadata=meta, resource_type="model",
                        resource_name=model)
    if names & {"BadRequestError", "UnprocessableEntityError", "InvalidRequestError"} \
            or status in (400, 413, 422):
        return InvalidArgument(f"The provider of {subject} rejected the request: {detail}",
                               reason="PROVIDER_BAD_REQUEST", metadata=meta)
    if names & {"ServiceUnavailableError", "InternalServerError", "BadGatewayError",
                "APIConnectionError", "ConnectError", "TransportError", "ConnectionError",
                "MidStreamFallbackError", "ClientConnectionError", "ClientPayloadError"} or (status is not None and status >= 500):
        return Unavailable(f"The provider of {subject} is unavailable; retry later.",
                           reason="PROVIDER_UNAVAILABLE", metadata=meta,
                           retry_after=retry_after_seconds(exc))
    if "APIError" in names:  # a status-less provider error: most likely transient
        return Unavailable(f"The provider of {subject} failed; retry later.",
                           reason="PROVIDER_UNAVAILABLE", metadata=meta)
    return Internal(f"Calling {subject} failed unexpectedly.", reason="PROVIDER_ERROR",
                    metadata=meta)


#: What litellm's ``ExceptionCheckers.is_error_str_context_window_exceeded`` looks for in an
#: error message (litellm 1.110), so both routes classify a provider's answer alike.
_CONTEXT_WINDOW_MARKERS = (
    "exceed context limit", "this model's maximum context length is",
    "requested token count exceeds the model's maximum context length",
    "string too long. expected a string with maximum length", "model's maximum context limit",
    "is longer than the model's context length", "input tokens exceed the configured limit",
    "`inputs` tokens + `max_new_tokens` must be", "exceeds the available context size",
    "exceeds the maximum number of tokens allowed", "context_length_exceeded",
    "prompt is too long",
)


def context_window_exceeded(message: str) -> bool:
    """Whether a provider's error message says the prompt is too long for the model."""
    text = message.lower()
    if "string_above_max_length" in text or ("invalid 'user'" in text
                                             and "string too long" in text):
        return False
    if "current length is" in text and "while limit is" in text:
        return True
    return any(marker in text for marker in _CONTEXT_WINDOW_MARKERS)


def is_retryable(exc: BaseException) -> bool:
    """Whether trying the same call again later may succeed (rate limits, outages)."""
    if isinstance(exc, asyncio.CancelledError):
        return False
    if isinstance(exc, RowforgeError) and exc.reason == "QUOTA_EXCEEDED":
        return False  # a project's own quota: waiting seconds does not lift it
    return isinstance(map_provider_error(exc), RETRYABLE)


def retry_after(exc: BaseException) -> float | None:
    """Seconds to wait before retrying, when the error says (``Retry-After`` headers)."""
    if isinstance(exc, RowforgeError):
        return exc.retry_after
    return retry_after_seconds(exc)


def retry_after_seconds(exc: BaseException) -> float | None:
    """Parse ``retry-after-ms`` / ``retry-after`` from whatever headers the exception carries."""
    for headers in _headers(exc):
        millis = _get(headers, "retry-after-ms")
        if millis is not None:
            try:
                return max(float(millis) / 1000.0, 0.0)
            except ValueError:
                pass
        value = _get(headers, "retry-after")
        if value is None:
            continue
        try:
            return max(float(value), 0.0)
        except ValueError:
            pass
        try:  # an HTTP date
            return max(email.utils.parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
        except (TypeError, ValueError, IndexError):
            continue
    return None


def _headers(exc: BaseException) -> list[Any]:
    found = []
    for source in (getattr(exc, "litellm_response_headers", None), getattr(exc, "headers", None)):
        if source:
            found.append(source)
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) if response is not None else None
    if headers:
        found.append(headers)
    return found


def _get(headers: Any, name: str) -> str | None:
    if not isinstance(headers, Mapping) and not hasattr(headers, "get"):
        return None
    value = headers.get(name)
    if value is None and isinstance(headers, Mapping):
        value = next((v for k, v in headers.items() if str(k).lower() == name), None)
    return None if value is None else str(value)


def _status(exc: BaseException) -> int | None:
    status = getattr(exc, "status_code", None)
    if status is None:
        response = getattr(exc, "response", None)
        status = getattr(response, "status_code", None)
    try:
        return int(status) if status is not None else None
    except (TypeError, ValueError):
        return None


def _malformed(exc: BaseException) -> bool:
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 10:
        if isinstance(current, json.JSONDecodeError | UnicodeDecodeError):
            return True
        current = current.__cause__ or current.__context__
        seen += 1
    text = str(exc)
    return any(marker in text for marker in ("JSONDecodeError", "Expecting value",
                                             "Unterminated string", "Expecting property name",
                                             "Invalid control character", "Extra data"))


def _detail(exc: BaseException) -> str:
    text = str(getattr(exc, "message", None) or exc) or type(exc).__name__
    text = _PREFIX.sub("", text.strip())
    text = _PREFIX.sub("", text)
    text = " ".join(text.split())
    return text[:_MAX_DETAIL] + ("..." if len(text) > _MAX_DETAIL else "")
