"""In-process serving of the built-in models (``builtin/...`` routes, transport ``builtin``).

They never go through litellm: its per-call overhead (request building, logging, cost
lookups: about a millisecond) would dwarf models that answer in microseconds and would
dominate the table and batch benchmarks they back.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from typing import Any

import numpy as np

from rowforge.server.errors import Internal, InvalidArgument
from rowforge.server.providers import builtin_chat, builtin_rerank, hashing_embedder, minilm
from rowforge.server.providers import text as textutil
from rowforge.server.providers.backend import ChatRequest, TextSink
from rowforge.server.providers.messages import Message
from rowforge.server.providers.registry import ModelSpec
from rowforge.server.providers.results import ChatChunk, ChatResult, EmbedResult, Usage

# Above this many texts/documents, work moves to a thread so the event loop stays responsive.
INLINE_LIMIT = 256
#: Inputs longer than this in all (characters) are embedded or ranked in a thread.
INLINE_CHARS = 20_000


class BuiltinBackend:
    """The ``builtin`` transport (see the module docstring)."""

    async def start(self, specs: Sequence[ModelSpec]) -> None:
        pass

    async def aclose(self) -> None:
        pass

    async def stream_chat(self, spec: ModelSpec, request: ChatRequest
                          ) -> AsyncGenerator[ChatChunk, None]:
        async for chunk in stream_chat(spec, request.messages, max_tokens=request.max_tokens,
                                       stop=request.stop,
                                       response_format=request.response_format):
            yield chunk

    async def chat(self, spec: ModelSpec, request: ChatRequest, *,
                   on_text: TextSink | None = None) -> ChatResult:
        # The whole answer exists at once: one piece of text, no generator step per token.
        final = complete_chat(spec, request.messages, max_tokens=request.max_tokens,
                              stop=request.stop, response_format=request.response_format)
        text = final.text
        if on_text is not None and text:
            on_text(text)
        return ChatResult(text=text, finish_reason=final.finish_reason, usage=final.usage,
                          model=spec.id, cost_usd=0.0)

    async def embed(self, spec: ModelSpec, texts: Sequence[str], *, is_query: bool,
                    timeout: float) -> EmbedResult:
        return await embed(spec, texts)

    async def rerank(self, spec: ModelSpec, query: str, documents: Sequence[str], *,
                     top_n: int, timeout: float) -> list[tuple[int, float]]:
        return await rerank(spec, query, documents, top_n)


async def stream_chat(spec: ModelSpec, messages: Sequence[Message], *,
                      max_tokens: int | None, stop: Sequence[str] | str | None,
                      response_format: Mapping[str, Any] | None) -> AsyncIterator[ChatChunk]:
    """Stream ``rowforge/chat``'s answer: one chunk per piece, then the final chunk."""
    completion = complete_chat(spec, messages, max_tokens=max_tokens, stop=stop,
                               response_format=response_format)
    for piece in completion.pieces:
        yield ChatChunk(text=piece)
    yield ChatChunk(finish_reason=completion.finish_reason, usage=completion.usage,
                    model=spec.id, cost_usd=0.0)


def complete_chat(spec: ModelSpec, messages: Sequence[Message], *, max_tokens: int | None,
                  stop: Sequence[str] | str | None,
                  response_format: Mapping[str, Any] | None) -> builtin_chat.Completion:
    """``rowforge/chat``'s whole answer, after checking the prompt fits the context."""
    if spec.route != "builtin/chat":
        raise Internal(f"Built-in model {spec.id!r} cannot chat.", reason="UNKNOWN_BUILTIN_ROUTE",
                       metadata={"model": spec.id})
    used = builtin_chat.prompt_tokens(messages)
    if used > spec.context_length:
        raise InvalidArgument.field(
            "messages", f"the prompt has about {used} tokens; model {spec.id!r} accepts "
                        f"{spec.context_length}",
            reason="CONTEXT_WINDOW_EXCEEDED", metadata={"model": spec.id})
    return builtin_chat.complete(messages, max_tokens=max_tokens, stop=stop,
                                 response_format=response_format)


async def embed(spec: ModelSpec, texts: Sequence[str]) -> EmbedResult:
    if spec.route not in ("builtin/embed", "builtin/minilm"):
        raise Internal(f"Built-in model {spec.id!r} cannot embed.",
                       reason="UNKNOWN_BUILTIN_ROUTE", metadata={"model": spec.id})
    if spec.route == "builtin/minilm" or len(texts) > INLINE_LIMIT \
            or sum(map(len, texts)) > INLINE_CHARS:
        # Off the event loop: other calls go on while a large input is tokenised and embedded.
        return await asyncio.to_thread(_embed_now, spec, texts)
    return _embed_now(spec, texts)


def _embed_now(spec: ModelSpec, texts: Sequence[str]) -> EmbedResult:
    usage = Usage(prompt_tokens=sum(textutil.count_tokens(t) for t in texts))
    if spec.route == "builtin/embed":
        vectors = hashing_embedder.embed_texts(texts)
    else:
        vectors = minilm.encoder().encode(texts)
    return EmbedResult(vectors=np.asarray(vectors, dtype=np.float32), usage=usage, model=spec.id)


async def rerank(spec: ModelSpec, query: str, documents: Sequence[str],
                 top_n: int) -> list[tuple[int, float]]:
    if spec.route != "builtin/rerank":
        raise Internal(f"Built-in model {spec.id!r} cannot rerank.",
                       reason="UNKNOWN_BUILTIN_ROUTE", metadata={"model": spec.id})
    if len(documents) > INLINE_LIMIT or len(query) + sum(map(len, documents)) > INLINE_CHARS:
        return await asyncio.to_thread(builtin_rerank.rerank, query, documents, top_n)
    return builtin_rerank.rerank(query, documents, top_n)
