"""Chat completions: streamed (:func:`stream_chat`) and whole (:func:`chat`).

Built-in models answer in-process (:mod:`builtin`); every other model goes through
``litellm.acompletion`` with streaming on (usage included), no retries of its own (retrying is
the caller's choice, see :mod:`retry`) and its errors mapped by :mod:`litellm_errors`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any

from rowforge.server.errors import InvalidArgument, RowforgeError, Violations
from rowforge.server.providers import builtin, litellm_client
from rowforge.server.providers.formats import parse_json_output, validate_response_format
from rowforge.server.providers.litellm_errors import map_provider_error
from rowforge.server.providers.messages import Message, coerce_messages
from rowforge.server.providers.registry import ModelSpec, capability_missing
from rowforge.server.providers.results import FINISH_STOP, ChatChunk, ChatResult, Usage
from rowforge.server.providers.tokens import count_text_tokens, estimate_tokens

DEFAULT_TIMEOUT = 60.0
MAX_STOP_SEQUENCES = 4

MessageLike = Message | Mapping[str, Any]


async def stream_chat(spec: ModelSpec, messages: Iterable[MessageLike], *,
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
    msgs = coerce_messages(messages)
    _validate(spec, msgs, temperature=temperature, max_tokens=max_tokens, top_p=top_p,
              stop=stop, response_format=response_format, timeout=timeout)
    limit = max_tokens if max_tokens is not None else spec.max_output_tokens
    if spec.is_builtin:
        async for chunk in builtin.stream_chat(spec, msgs, max_tokens=limit, stop=stop,
                                               response_format=response_format):
            yield chunk
        return
    async for chunk in _litellm_stream(spec, msgs, temperature=temperature, max_tokens=limit,
                                       top_p=top_p, stop=stop, response_format=response_format,
                                       timeout=timeout):
        yield chunk


async def chat(spec: ModelSpec, messages: Iterable[MessageLike], *,
               temperature: float | None = None, max_tokens: int | None = None,
               top_p: float | None = None, stop: Sequence[str] | str | None = None,
               response_format: Mapping[str, Any] | None = None,
               timeout: float | None = None) -> ChatResult:
    """The whole answer (same arguments as :func:`stream_chat`).

    With a JSON response format, ``parsed`` holds the decoded value; for ``json_schema`` it is
    validated with jsonschema.

    Raises:
        Unavailable: reason ``OUTPUT_SCHEMA_MISMATCH`` when the JSON is invalid (retryable),
            plus everything :func:`stream_chat` raises.
    """
    if spec.is_builtin:  # same answer as streaming, without a generator step per token
        msgs = coerce_messages(messages)
        _validate(spec, msgs, temperature=temperature, max_tokens=max_tokens, top_p=top_p,
                  stop=stop, response_format=response_format, timeout=timeout)
        limit = max_tokens if max_tokens is not None else spec.max_output_tokens
        final = builtin.complete_chat(spec, msgs, max_tokens=limit, stop=stop,
                                      response_format=response_format)
        text = final.text
        return ChatResult(text=text, finish_reason=final.finish_reason, usage=final.usage,
                          model=spec.id, cost_usd=0.0,
                          parsed=parse_json_output(text, response_format))
    parts: list[str] = []
    final: ChatChunk | None = None
    async for chunk in stream_chat(spec, messages, temperature=temperature,
                                   max_tokens=max_tokens, top_p=top_p, stop=stop,
                                   response_format=response_format, timeout=timeout):
        if chunk.text:
            parts.append(chunk.text)
        if chunk.is_final:
            final = chunk
    text = "".join(parts)
    final = final or ChatChunk(finish_reason=FINISH_STOP, usage=Usage(), model=spec.id)
    parsed = parse_json_output(text, response_format)
    return ChatResult(text=text, finish_reason=final.finish_reason or FINISH_STOP,
                      usage=final.usage or Usage(), model=final.model or spec.id,
                      cost_usd=final.cost_usd, parsed=parsed)


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


# --- litellm -----------------------------------------------------------------------------

async def _litellm_stream(spec: ModelSpec, messages: Sequence[Message], *,
                          temperature: float | None, max_tokens: int, top_p: float | None,
                          stop: Sequence[str] | str | None,
                          response_format: Mapping[str, Any] | None,
                          timeout: float | None) -> AsyncIterator[ChatChunk]:
    litellm = litellm_client.load()
    kwargs = litellm_client.request_kwargs(
        spec, messages=[m.to_openai() for m in messages], temperature=temperature,
        max_tokens=max_tokens,
                      top_p=top_p, stop=stop,
                      response_format=dict(response_format) if response_format else None,
                      timeout=timeout or DEFAULT_TIMEOUT)
    kwargs.update(stream=True, stream_options={"include_usage": True})
    response: Any = None
    finish: str | None = None
    usage: Usage | None = None
    model = spec.id
    emitted: list[str] = []
    try:
        response = await litellm.acompletion(**kwargs)
        async for chunk in response:
            for choice in getattr(chunk, "choices", None) or ():
                delta = getattr(choice, "delta", None)
                content = getattr(delta, "content", None) if delta is not None else None
                if content:
                    emitted.append(content)
                    yield ChatChunk(text=content)
                if getattr(choice, "finish_reason", None):
                    finish = choice.finish_reason
            chunk_usage = getattr(chunk, "usage", None)
            if chunk_usage is not None and getattr(chunk_usage, "prompt_tokens", None) is not None:
                usage = Usage(int(chunk_usage.prompt_tokens or 0),
                              int(chunk_usage.completion_tokens or 0))
    except (asyncio.CancelledError, GeneratorExit, RowforgeError):
        raise
    except Exception as exc:
        raise map_provider_error(exc, model=spec.id) from exc
    finally:
        if response is not None:
            await _close(response)
    if usage is None:  # the provider sent no usage: estimate rather than report zero
        usage = Usage(estimate_tokens(messages), count_text_tokens("".join(emitted)))
    yield ChatChunk(finish_reason=_finish(finish), usage=usage, model=model,
                    cost_usd=cost_usd(spec, usage))


def _finish(reason: str | None) -> str:
    if reason in (None, "", "stop", "end_turn", "stop_sequence", "tool_calls", "function_call"):
        return FINISH_STOP
    if reason in ("length", "max_tokens"):
        return "length"
    if reason in ("content_filter", "safety"):
        return "content_filter"
    return FINISH_STOP


async def _close(response: Any) -> None:
    """Release the HTTP stream, also when the consumer stopped early or was cancelled."""
    for target in (response, getattr(response, "completion_stream", None)):
        for name in ("aclose", "close"):
            method = getattr(target, name, None)
            if method is None:
                continue
            with contextlib.suppress(Exception):
                outcome = method()
                if asyncio.iscoroutine(outcome):
                    await outcome
            break


def cost_usd(spec: ModelSpec, usage: Usage) -> float | None:
    """The call's price from litellm's (local) price map, when it knows the model."""
    if spec.is_builtin:
        return 0.0
    try:
        litellm = litellm_client.load()
        prompt_cost, completion_cost = litellm.cost_per_token(
            model=spec.route, prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens)
        return float(prompt_cost) + float(completion_cost)
    except Exception:  # unknown model or price: no cost rather than a failed call
        return None
