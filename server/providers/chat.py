"""Chat completions: streamed (:func:`stream_chat`) and whole (:func:`chat`), through the
process's default :class:`~rowforge.server.providers.client.Providers`; and the checks every
chat call passes before it reaches a backend (:func:`chat_request`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any

from rowforge.server.errors import InvalidArgument, Violations
from rowforge.server.providers.backend import ChatRequest, TextSink
from rowforge.server.providers.formats import validate_response_format
from rowforge.server.providers.messages import Message, coerce_messages
from rowforge.server.providers.registry import ModelSpec, capability_missing
from rowforge.server.providers.results import ChatChunk, ChatResult

DEFAULT_TIMEOUT = 60.0
MAX_STOP_SEQUENCES = 4

MessageLike = Message | Mapping[str, Any]


def stream_chat(spec: ModelSpec, messages: Iterable[MessageLike], *,
                temperature: float | None = None, max_tokens: int | None = None,
                top_p: float | None = None, stop: Sequence[str] | str | None = None,
                response_format: Mapping[str, Any] | None = None,
                timeout: float | None = None) -> AsyncIterator[ChatChunk]:
    """Stream an answer: text chunks, then one final chunk (empty text, ``finish_reason``,
    ``usage``, ``model``, ``cost_usd`` when known).

    Args:
        spec: The model (must have the ``chat`` capability; ``image``/``audio`` for attachments).
        messages: ``Message`` objects or dicts (``role``, ``content``, ``attachments``).
        temperature / top_p: Sampling (ignored by the built-in model).
        max_tokens: Output cap; defaults to ``spec.max_output_tokens``.
        stop: Up to 4 stop sequences.
        response_format: OpenAI-style: ``{"type": "json_object"}`` or
            ``{"type": "json_schema", "json_schema": {"name", "schema", "strict"}}``.
        timeout: Seconds the provider may take (per request; default 60).

    Raises:
        InvalidArgument: bad parameters, missing capability, prompt too long.
        ResourceExhausted / Unavailable / NotFound / Internal: see :mod:`litellm_errors`.
    """
    from rowforge.server.providers.client import default_providers

    return default_providers().stream_chat(
        spec, messages, temperature=temperature, max_tokens=max_tokens, top_p=top_p, stop=stop,
        response_format=response_format, timeout=timeout)


async def chat(spec: ModelSpec, messages: Iterable[MessageLike], *,
               temperature: float | None = None, max_tokens: int | None = None,
               top_p: float | None = None, stop: Sequence[str] | str | None = None,
               response_format: Mapping[str, Any] | None = None,
               timeout: float | None = None, on_text: TextSink | None = None) -> ChatResult:
    """The whole answer (same arguments as :func:`stream_chat`).

    With a JSON response format, ``parsed`` holds the decoded value; for ``json_schema`` it is
    validated with jsonschema. ``on_text`` receives the text as it arrives (streamed from the
    provider when the transport can; the built-in model hands its whole text at once).

    Raises:
        Unavailable: reason ``OUTPUT_SCHEMA_MISMATCH`` when the JSON is invalid (retryable),
            plus everything :func:`stream_chat` raises.
    """
    from rowforge.server.providers.client import default_providers

    return await default_providers().chat(
        spec, messages, temperature=temperature, max_tokens=max_tokens, top_p=top_p, stop=stop,
        response_format=response_format, timeout=timeout, on_text=on_text)


def chat_request(spec: ModelSpec, messages: Iterable[MessageLike], *,
                 temperature: float | None, max_tokens: int | None, top_p: float | None,
                 stop: Sequence[str] | str | None, response_format: Mapping[str, Any] | None,
                 timeout: float | None) -> ChatRequest:
    """The checked request, defaults applied.

    Raises:
        InvalidArgument: bad parameters, missing capability, unsupported attachments.
    """
    msgs = coerce_messages(messages)
    _validate(spec, msgs, temperature=temperature, max_tokens=max_tokens, top_p=top_p,
              stop=stop, response_format=response_format, timeout=timeout)
    return ChatRequest(messages=msgs,
                       max_tokens=max_tokens if max_tokens is not None
                       else spec.max_output_tokens,
                       timeout=timeout or DEFAULT_TIMEOUT, temperature=temperature,
                       top_p=top_p, stop=stop, response_format=response_format)


# --- validation --------------------------------------------------------------------------

def _validate(spec: ModelSpec, messages: Sequence[Message], *, temperature: float | None,
              max_tokens: int | None, top_p: float | None, stop: Sequence[str] | str | None,
              response_format: Mapping[str, Any] | None, timeout: float | None) -> None:
    if "chat" not in spec.capabilities:
        raise capability_missing(spec, "chat")
    for i, message in enumerate(messages):
        for j, attachment in enumerate(message.attachments):
            if attachment.kind not in ("image", "audio"):
                raise InvalidArgument.field(
                    f"messages[{i}].attachments[{j}].content_type",
                    "only image/* and audio/* attachments can be sent to a model",
                    reason="UNSUPPORTED_ATTACHMENT", metadata={"contentType":
                                                               attachment.content_type})
            if attachment.kind not in spec.capabilities:
                raise capability_missing(spec, attachment.kind)
    v = Violations()
    if temperature is not None:
        v.check(0.0 <= temperature <= 2.0, "temperature", "must be between 0 and 2")
    if top_p is not None:
        v.check(0.0 < top_p <= 1.0, "top_p", "must be greater than 0 and at most 1")
    if max_tokens is not None:
        v.check(1 <= max_tokens <= spec.context_length, "max_tokens",
                f"must be between 1 and the model's context length ({spec.context_length})")
    if timeout is not None:
        v.check(timeout > 0, "timeout", "must be positive")
    stops = [stop] if isinstance(stop, str) else list(stop or ())
    v.check(len(stops) <= MAX_STOP_SEQUENCES, "stop",
            f"at most {MAX_STOP_SEQUENCES} stop sequences")
    v.check(all(isinstance(s, str) and s for s in stops), "stop",
            "stop sequences must be non-empty strings")
    v.raise_if_any()
    validate_response_format(response_format)
