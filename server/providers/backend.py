"""The provider interface: what every transport to a model implements.

One :class:`Backend` per transport (``builtin`` in-process, ``litellm``, ``openai`` for the
OpenAI HTTP protocol), chosen per model by ``ModelSpec.transport`` when the registry is built.
Callers never see a backend: they go through :class:`~rowforge.server.providers.client.
Providers`, which validates, dispatches and prices. A backend receives checked requests and
returns the shared result types, raising only :mod:`rowforge.server.errors` errors (mapped the
same way on every route: see :mod:`litellm_errors`). Backends never retry (see :mod:`retry`).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from rowforge.server.providers.messages import Message
from rowforge.server.providers.registry import ModelSpec
from rowforge.server.providers.results import ChatChunk, ChatResult, EmbedResult

#: Receives streamed text as it arrives (see :meth:`Backend.chat` with ``on_text``).
TextSink = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """A validated chat call (``max_tokens`` and ``timeout`` already defaulted)."""

    messages: Sequence[Message]
    max_tokens: int
    timeout: float
    temperature: float | None = None
    top_p: float | None = None
    stop: Sequence[str] | str | None = None
    response_format: Mapping[str, Any] | None = None

    def openai_messages(self) -> list[dict[str, Any]]:
        return [m.to_openai() for m in self.messages]

    def options(self) -> dict[str, Any]:
        """The sampling options that are set, under their OpenAI names."""
        options: dict[str, Any] = {"max_tokens": self.max_tokens}
        if self.temperature is not None:
            options["temperature"] = self.temperature
        if self.top_p is not None:
            options["top_p"] = self.top_p
        if self.stop:
            options["stop"] = [self.stop] if isinstance(self.stop, str) else list(self.stop)
        if self.response_format:
            options["response_format"] = dict(self.response_format)
        return options


class Backend(Protocol):
    """One transport to models. Every method may raise the errors of :mod:`litellm_errors`."""

    async def start(self, specs: Sequence[ModelSpec]) -> None:
        """Get ready for these models (imports, pools) without blocking the event loop."""

    async def aclose(self) -> None:
        """Release connections."""

    def stream_chat(self, spec: ModelSpec, request: ChatRequest) -> AsyncGenerator[ChatChunk, None]:
        """Text chunks, then one final chunk with ``finish_reason``, ``usage``, ``model``.
        Closing the iterator early closes the upstream stream at once."""
        ...

    async def chat(self, spec: ModelSpec, request: ChatRequest, *,
                   on_text: TextSink | None = None) -> ChatResult:
        """The whole answer (``parsed`` left to the caller). With ``on_text`` the text is
        also handed over as it arrives (streamed upstream when the transport can)."""
        ...

    async def embed(self, spec: ModelSpec, texts: Sequence[str], *, is_query: bool,
                    timeout: float) -> EmbedResult:
        """One vector per text, float32, in order."""
        ...

    async def rerank(self, spec: ModelSpec, query: str, documents: Sequence[str], *,
                     top_n: int, timeout: float) -> list[tuple[int, float]]:
        """``(index, score)`` pairs in any order (the caller sorts and cuts)."""
        ...


async def collect(chunks: AsyncIterator[ChatChunk], spec: ModelSpec,
                  on_text: TextSink | None = None) -> ChatResult:
    """A whole answer from a stream (``parsed`` left unset)."""
    parts: list[str] = []
    final: ChatChunk | None = None
    async for chunk in chunks:
        if chunk.text:
            parts.append(chunk.text)
            if on_text is not None:
                on_text(chunk.text)
        if chunk.is_final:
            final = chunk
    assert final is not None and final.finish_reason is not None and final.usage is not None
    return ChatResult(text="".join(parts), finish_reason=final.finish_reason, usage=final.usage,
                      model=final.model or spec.id, cost_usd=final.cost_usd)
