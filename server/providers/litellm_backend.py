"""The ``litellm`` transport: the universal route to every provider litellm knows.

Streams through ``litellm.acompletion(stream=True)`` with usage included; whole answers
through a non-streamed ``acompletion`` (litellm's streaming wrapper costs several times the CPU
of one response). litellm is imported off the event loop before its first use
(:func:`litellm_client.preload`), and its errors are mapped by :mod:`litellm_errors`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Sequence
from types import ModuleType
from typing import Any

import numpy as np

from rowforge.server.errors import RowforgeError, Unavailable
from rowforge.server.providers import litellm_client, pricing
from rowforge.server.providers.backend import ChatRequest, TextSink, collect
from rowforge.server.providers.litellm_errors import map_provider_error
from rowforge.server.providers.registry import ModelSpec
from rowforge.server.providers.results import (
    ChatChunk,
    ChatResult,
    EmbedResult,
    Usage,
    finish_reason,
)
from rowforge.server.providers.tokens import count_text_tokens, estimate_tokens

#: Beyond the provider timeout litellm enforces, a bound on everything around the call.
_OUTER_MARGIN_S = 5.0


class LiteLLMBackend:
    """The ``litellm`` transport (see the module docstring)."""

    async def start(self, specs: Sequence[ModelSpec]) -> None:
        if specs:
            await litellm_client.preload()
            await asyncio.to_thread(litellm_client.warm_routes,
                                    [s.route for s in specs if "chat" in s.capabilities])

    async def aclose(self) -> None:
        pass

    async def _litellm(self) -> ModuleType:
        return litellm_client.loaded() or await litellm_client.preload()

    async def stream_chat(self, spec: ModelSpec, request: ChatRequest
                          ) -> AsyncGenerator[ChatChunk, None]:
        litellm = await self._litellm()
        kwargs = litellm_client.request_kwargs(spec, messages=request.openai_messages(),
                                               timeout=request.timeout, **request.options())
        kwargs.update(stream=True, stream_options={"include_usage": True})
        response: Any = None
        finish: str | None = None
        usage: Usage | None = None
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
                raw = getattr(chunk, "usage", None)
                if raw is not None and getattr(raw, "prompt_tokens", None) is not None:
                    usage = Usage(int(raw.prompt_tokens or 0), int(raw.completion_tokens or 0))
        except (asyncio.CancelledError, GeneratorExit, RowforgeError):
            raise
        except Exception as exc:
            raise map_provider_error(exc, model=spec.id) from exc
        finally:
            if response is not None:
                await _close(response)
        if usage is None:  # the provider sent no usage: estimate rather than report zero
            usage = Usage(estimate_tokens(request.messages), count_text_tokens("".join(emitted)))
        yield ChatChunk(finish_reason=finish_reason(finish), usage=usage, model=spec.id,
                        cost_usd=pricing.cost_usd(spec, usage))

    async def chat(self, spec: ModelSpec, request: ChatRequest, *,
                   on_text: TextSink | None = None) -> ChatResult:
        if on_text is not None:
            return await collect(self.stream_chat(spec, request), spec, on_text)
        litellm = await self._litellm()
        kwargs = litellm_client.request_kwargs(spec, messages=request.openai_messages(),
                                               timeout=request.timeout, **request.options())
        try:
            async with asyncio.timeout(request.timeout + _OUTER_MARGIN_S):
                response = await litellm.acompletion(**kwargs)
        except (asyncio.CancelledError, RowforgeError):
            raise
        except Exception as exc:
            raise map_provider_error(exc, model=spec.id) from exc
        choices = getattr(response, "choices", None) or []
        message = getattr(choices[0], "message", None) if choices else None
        if message is None:
            raise Unavailable(f"The provider of model {spec.id!r} sent an answer without a "
                              "message; retry later.", reason="PROVIDER_BAD_RESPONSE",
                              metadata={"model": spec.id})
        raw = getattr(response, "usage", None)
        usage = Usage(int(getattr(raw, "prompt_tokens", 0) or 0),
                      int(getattr(raw, "completion_tokens", 0) or 0))
        return ChatResult(text=getattr(message, "content", None) or "",
                          finish_reason=finish_reason(getattr(choices[0], "finish_reason", None)),
                          usage=usage, model=spec.id, cost_usd=pricing.cost_usd(spec, usage))

    async def embed(self, spec: ModelSpec, texts: Sequence[str], *, is_query: bool,
                    timeout: float) -> EmbedResult:
        litellm = await self._litellm()
        kwargs = litellm_client.request_kwargs(spec, input=list(texts), timeout=timeout)
        try:
            response = await litellm.aembedding(**kwargs)
        except (asyncio.CancelledError, RowforgeError):
            raise
        except Exception as exc:
            raise map_provider_error(exc, model=spec.id) from exc
        try:
            rows = sorted(((_field(item, "index"), _field(item, "embedding"))
                           for item in response.data), key=lambda pair: pair[0] or 0)
            vectors = np.asarray([vector for _, vector in rows], dtype=np.float32)
            if vectors.ndim != 2 or vectors.shape[0] != len(texts):
                raise ValueError(f"expected {len(texts)} vectors, got shape {vectors.shape}")
        except (TypeError, ValueError, AttributeError) as exc:
            raise Unavailable(f"The provider of model {spec.id!r} sent malformed embeddings.",
                              reason="PROVIDER_BAD_RESPONSE",
                              metadata={"model": spec.id}) from exc
        raw = getattr(response, "usage", None)
        prompt_tokens = getattr(raw, "prompt_tokens", None) if raw is not None else None
        if prompt_tokens is None:
            prompt_tokens = sum(count_text_tokens(t) for t in texts)
        return EmbedResult(vectors=vectors, usage=Usage(prompt_tokens=int(prompt_tokens)),
                           model=spec.id)

    async def rerank(self, spec: ModelSpec, query: str, documents: Sequence[str], *,
                     top_n: int, timeout: float) -> list[tuple[int, float]]:
        litellm = await self._litellm()
        kwargs = litellm_client.request_kwargs(spec, query=query, documents=list(documents),
                                               top_n=top_n or None, timeout=timeout)
        try:
            response = await litellm.arerank(**kwargs)
        except (asyncio.CancelledError, RowforgeError):
            raise
        except Exception as exc:
            raise map_provider_error(exc, model=spec.id) from exc
        try:
            return [(int(_field(r, "index")), float(_field(r, "relevance_score")))
                    for r in response.results]
        except (TypeError, ValueError, AttributeError, KeyError) as exc:
            raise Unavailable(f"The provider of model {spec.id!r} sent a malformed ranking.",
                              reason="PROVIDER_BAD_RESPONSE",
                              metadata={"model": spec.id}) from exc


def _field(item: Any, name: str) -> Any:
    return item.get(name) if isinstance(item, dict) else getattr(item, name)


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
