"""Each litellm/openai/httpx failure maps to the right domain error, reason and retry hint."""

from __future__ import annotations

import asyncio
import email.utils
import json
import time
from collections.abc import Callable

import httpx
import pytest

from rowforge.server.errors import (
    Internal,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    RowforgeError,
    Unavailable,
)
from rowforge.server.providers import is_retryable, map_provider_error, retry_after
from rowforge.server.providers.litellm_client import load

litellm = load()
M, P = "fake-gpt", "openai"


def response(status: int, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, headers=headers or {},
                          request=httpx.Request("POST", "http://127.0.0.1/v1/chat/completions"))


def malformed() -> Exception:
    try:
        json.loads('{"choices": [')
    except json.JSONDecodeError as cause:
        try:
            raise litellm.APIConnectionError("OpenAIException - bad body", P, M) from cause
        except litellm.APIConnectionError as exc:
            return exc
    raise AssertionError("unreachable")


CASES: list[tuple[str, Callable[[], BaseException], type[RowforgeError], str, bool]] = [
    ("rate limit", lambda: litellm.RateLimitError("slow down", P, M, response=response(429)),
     ResourceExhausted, "PROVIDER_RATE_LIMITED", True),
    ("service unavailable", lambda: litellm.ServiceUnavailableError("down", P, M,
                                                                     response=response(503)),
     Unavailable, "PROVIDER_UNAVAILABLE", True),
    ("internal server error", lambda: litellm.InternalServerError("boom", P, M,
                                                                   response=response(500)),
     Unavailable, "PROVIDER_UNAVAILABLE", True),
    ("bad gateway", lambda: litellm.BadGatewayError("proxy", P, M, response=response(502)),
     Unavailable, "PROVIDER_UNAVAILABLE", True),
    ("5xx APIError", lambda: litellm.APIError(504, "gateway timeout", P, M),
     Unavailable, "PROVIDER_UNAVAILABLE", True),
    ("connection error", lambda: litellm.APIConnectionError("refused", P, M),
     Unavailable, "PROVIDER_UNAVAILABLE", True),
    ("litellm timeout", lambda: litellm.Timeout("too slow", M, P),
     Unavailable, "PROVIDER_TIMEOUT", True),
    ("asyncio timeout", lambda: TimeoutError(), Unavailable, "PROVIDER_TIMEOUT", True),
    ("httpx timeout", lambda: httpx.ReadTimeout("read"), Unavailable, "PROVIDER_TIMEOUT", True),
    ("httpx connect", lambda: httpx.ConnectError("refused"), Unavailable,
     "PROVIDER_UNAVAILABLE", True),
    ("not found", lambda: litellm.NotFoundError("no such model", M, P, response=response(404)),
     NotFound, "MODEL_NOT_FOUND", False),
    ("context window", lambda: litellm.ContextWindowExceededError("too long", M, P),
     InvalidArgument, "CONTEXT_WINDOW_EXCEEDED", False),
    ("content policy", lambda: litellm.ContentPolicyViolationError("nope", M, P),
     InvalidArgument, "CONTENT_POLICY_VIOLATION", False),
    ("bad request", lambda: litellm.BadRequestError("bad param", M, P),
     InvalidArgument, "PROVIDER_BAD_REQUEST", False),
    ("unprocessable", lambda: litellm.UnprocessableEntityError("bad", M, P,
                                                                response=response(422)),
     InvalidArgument, "PROVIDER_BAD_REQUEST", False),
    ("authentication", lambda: litellm.AuthenticationError("bad key", P, M),
     Internal, "PROVIDER_AUTH_FAILED", False),
    ("permission denied", lambda: litellm.PermissionDeniedError("no", P, M, response(403)),
     Internal, "PROVIDER_AUTH_FAILED", False),
    ("response validation", lambda: litellm.APIResponseValidationError("bad shape", P, M),
     Unavailable, "PROVIDER_BAD_RESPONSE", True),
    ("json decode inside", malformed, Unavailable, "PROVIDER_BAD_RESPONSE", True),
    ("raw json decode", lambda: json.JSONDecodeError("Expecting value", "", 0),
     Unavailable, "PROVIDER_BAD_RESPONSE", True),
    ("unexpected bug", lambda: KeyError("choices"), Internal, "PROVIDER_ERROR", False),
]


@pytest.mark.parametrize(("make", "error", "reason", "retryable"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_mapping(make: Callable[[], BaseException], error: type, reason: str,
                 retryable: bool) -> None:
    exc = make()
    mapped = map_provider_error(exc, model="fake/gpt")
    assert type(mapped) is error
    assert mapped.reason == reason
    assert mapped.metadata["model"] == "fake/gpt"
    assert mapped.message and "Traceback" not in mapped.message
    assert is_retryable(exc) is retryable
    assert is_retryable(mapped) is retryable


def test_auth_failure_is_never_unauthenticated() -> None:
    mapped = map_provider_error(litellm.AuthenticationError("bad key sk-123", P, M), model="m")
    assert mapped.code == "INTERNAL" and "sk-123" not in mapped.message


def test_provider_message_is_kept_for_bad_requests() -> None:
    mapped = map_provider_error(litellm.BadRequestError("temperature must be <= 2", M, P))
    assert "temperature must be <= 2" in mapped.message
    assert "litellm." not in mapped.message


def test_domain_errors_pass_through() -> None:
    original = InvalidArgument("x")
    assert map_provider_error(original) is original


@pytest.mark.parametrize(("headers", "expected"), [
    ({"retry-after": "7"}, 7.0),
    ({"Retry-After": "0.5"}, 0.5),
    ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),
    ({"retry-after": "soon"}, None),
    ({}, None),
])
def test_retry_after_from_headers(headers: dict[str, str], expected: float | None) -> None:
    exc = litellm.RateLimitError("slow", P, M, response=response(429, headers))
    assert retry_after(exc) == expected
    mapped = map_provider_error(exc)
    assert mapped.retry_after == expected
    if expected is not None:
        assert mapped.metadata["retryAfterSeconds"] == f"{expected:g}"


def test_retry_after_http_date() -> None:
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    exc = litellm.RateLimitError("slow", P, M, response=response(429, {"retry-after": when}))
    assert 25 <= (retry_after(exc) or 0) <= 31


def test_retry_after_on_unavailable() -> None:
    exc = litellm.ServiceUnavailableError("down", P, M, response=response(503, {"retry-after": "4"}))
    assert map_provider_error(exc).retry_after == 4.0


def test_cancellation_is_not_retryable() -> None:
    assert not is_retryable(asyncio.CancelledError())


def test_non_provider_values() -> None:
    assert retry_after(ValueError("x")) is None
    assert not is_retryable(ValueError("x"))
    assert is_retryable(ResourceExhausted("quota", retry_after=1))
    assert retry_after(ResourceExhausted("quota", retry_after=1)) == 1


