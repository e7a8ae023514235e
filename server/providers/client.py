"""The one way to a model: :class:`Providers` checks a call and hands it to the model's backend.

Each model's transport (``ModelSpec.transport``: ``builtin``, ``litellm``, ``openai``) was
chosen when the registry was built; here it only picks the backend object. Everything callers
see is the same on every route: :class:`ChatChunk` / :class:`ChatResult` / :class:`EmbedResult`,
the errors of :mod:`litellm_errors`, usage and cost.

The module-level functions of the package (``chat``, ``stream_chat``, ``embed``, ``rerank``)
use the process's :func:`default_providers`; a server starts it (imports and pools, off the
event loop) and closes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rowforge.server import tracing
from rowforge.server.auth import project_or_none
from rowforge.server.errors import Internal, RowforgeError
from rowforge.server.metrics import DISABLED, Metrics
from rowforge.server.providers.backend import Backend, TextSink
from rowforge.server.providers.builtin import BuiltinBackend
from rowforge.server.providers.chat import DEFAULT_TIMEOUT, MessageLike, chat_request
from rowforge.server.providers.embeddings import check_embed_call, check_embedding_size
from rowforge.server.providers.formats import parse_json_output
from rowforge.server.providers.litellm_backend import LiteLLMBackend
from rowforge.server.providers.openai_backend import DEFAULT_CONNECTIONS, OpenAIBackend
from rowforge.server.providers.registry import ModelSpec, capability_missing
from rowforge.server.providers.rerank import best_first, chat_rerank_call, check_rerank_call
from rowforge.server.providers.results import ChatChunk, ChatResult, EmbedResult, Usage
from rowforge.server.usage import NO_METER, UsageMeter


def standard_backends(connections: int = DEFAULT_CONNECTIONS) -> dict[str, Backend]:
    """A fresh backend per transport (``connections``: the ``openai`` pools' default size)."""
    return {"builtin": BuiltinBackend(), "litellm": LiteLLMBackend(),
            "openai": OpenAIBackend(connections)}


class Providers:
    """Model calls for any :class:`ModelSpec` (see the module docstring).

    Args:
        backends: ``transport -> backend``; the standard set by default.
    """

    def __init__(self, backends: Mapping[str, Backend] | None = None) -> None:
        self.backends: dict[str, Backend] = dict(backends or standard_backends())
        #: Where calls are counted (the server's metrics; disabled by default).
        self.metrics: Metrics = DISABLED
        #: Admits and counts each project's tokens (``quota_provider_tokens_per_day``).
        self.usage: UsageMeter = NO_METER

    def configure(self, *, connections: int) -> None:
        """Size the ``openai`` transport's pools (before the first call)."""
        self.backends["openai"] = OpenAIBackend(connections)

    def backend(self, spec: ModelSpec) -> Backend:
        backend = self.backends.get(spec.transport)
        if backend is None:
            raise Internal(f"Model {spec.id!r} uses transport {spec.transport!r}, which this "
                           "server does not have.", reason="UNKNOWN_TRANSPORT",
                           metadata={"model": spec.id, "transport": spec.transport})
        return backend

    async def start(self, specs: Iterable[ModelSpec]) -> None:
        """Ready every backend the models use (litellm's import happens in a thread)."""
        by_transport: dict[str, list[ModelSpec]] = defaultdict(list)
        for spec in specs:
            by_transport[spec.transport].append(spec)
        await asyncio.gather(*(self.backend(group[0]).start(group)
                               for group in by_transport.values()))

    async def aclose(self) -> None:
        for backend in self.backends.values():
            await backend.aclose()

    # --- chat ---------------------------------------------------------------------------

    async def stream_chat(self, spec: ModelSpec, messages: Iterable[MessageLike], *,
                          temperature: float | None = None, max_tokens: int | None = None,
                          top_p: float | None = None, stop: Sequence[str] | str | None = None,
                          response_format: Mapping[str, Any] | None = None,
                          timeout: float | None = None) -> AsyncIterator[ChatChunk]:
        """See :func:`rowforge.server.providers.stream_chat`."""
        await self._admit()
        request = chat_request(spec, messages, temperature=temperature, max_tokens=max_tokens,
                               top_p=top_p, stop=stop, response_format=response_format,
                               timeout=timeout)
        stream = self.backend(spec).stream_chat(spec, request)
        started, outcome, usage, cost = time.perf_counter(), "ok", None, None
        # Not the current span: the consumer runs between chunks, outside this call.
        span = tracing.start_span("provider.chat", model=spec.id, streamed=True)
        try:
            async for chunk in stream:
                if chunk.usage is not None:
                    usage, cost = chunk.usage, chunk.cost_usd
                yield chunk
        except BaseException as exc:
            outcome = _outcome(exc)
            raise
        finally:
            await stream.aclose()  # at once, also when our consumer stops early
            self._observe(spec, "chat", outcome, started, usage, cost)
            tracing.end_span(span, outcome)

    async def chat(self, spec: ModelSpec, messages: Iterable[MessageLike], *,
                   temperature: float | None = None, max_tokens: int | None = None,
                   top_p: float | None = None, stop: Sequence[str] | str | None = None,
                   response_format: Mapping[str, Any] | None = None,
                   timeout: float | None = None, on_text: TextSink | None = None) -> ChatResult:
        """See :func:`rowforge.server.providers.chat`."""
        await self._admit()
        request = chat_request(spec, messages, temperature=temperature, max_tokens=max_tokens,
                               top_p=top_p, stop=stop, response_format=response_format,
                               timeout=timeout)
        with self._observed(spec, "chat") as call:
            result = await self.backend(spec).chat(spec, request, on_text=on_text)
            call.usage, call.cost_usd = result.usage, result.cost_usd
        parsed = parse_json_output(result.text, response_format,
                                   finish_reason=result.finish_reason, stop=stop)
        if parsed is None:
            return result
        return ChatResult(text=result.text, finish_reason=result.finish_reason,
                          usage=result.usage, model=result.model, cost_usd=result.cost_usd,
                          parsed=parsed)

    # --- embeddings and ranking ---------------------------------------------------------

    async def embed(self, spec: ModelSpec, texts: Sequence[str], *, is_query: bool = False,
                    timeout: float | None = None) -> EmbedResult:
        """See :func:`rowforge.server.providers.embed`."""
        check_embed_call(spec, texts)
        if not texts:
            return EmbedResult(np.zeros((0, spec.embedding_size), np.float32), Usage(), spec.id)
        await self._admit()
        with self._observed(spec, "embed", texts=len(texts)) as call:
            result = await self.backend(spec).embed(spec, list(texts), is_query=is_query,
                                                    timeout=timeout or DEFAULT_TIMEOUT)
            call.usage = result.usage
        return check_embedding_size(spec, result)

    async def rerank(self, spec: ModelSpec, query: str, documents: Sequence[str],
                     top_n: int = 0, *, timeout: float | None = None
                     ) -> list[tuple[int, float]]:
        """See :func:`rowforge.server.providers.rerank`."""
        check_rerank_call(query, documents, top_n)
        if not documents:
            return []
        if "rerank" in spec.capabilities:
            await self._admit()
            with self._observed(spec, "rerank", documents=len(documents)):
                ranked = await self.backend(spec).rerank(spec, query, list(documents),
                                                         top_n=top_n,
                                                         timeout=timeout or DEFAULT_TIMEOUT)
            return best_first(spec, ranked, len(documents), top_n)
        if "chat" in spec.capabilities:
            messages, fmt = chat_rerank_call(query, documents)
            result = await self.chat(spec, messages, temperature=0.0, response_format=fmt,
                                     timeout=timeout)
            scores = result.parsed["scores"]
            return best_first(spec, [(i, float(s)) for i, s in enumerate(scores)],
                              len(documents), top_n)
        raise capability_missing(spec, "rerank")


    @contextlib.contextmanager
    def _observed(self, spec: ModelSpec, op: str, **attributes: Any) -> Iterator[_Call]:
        """Time, trace (``provider.<op>`` span) and count one whole model call; the body
        fills in the call's usage and cost."""
        call, started = _Call(), time.perf_counter()
        with tracing.leaf(f"provider.{op}", model=spec.id, **attributes):
            try:
                yield call
            except BaseException as exc:
                self._observe(spec, op, _outcome(exc), started)
                raise
        self._observe(spec, op, "ok", started, call.usage, call.cost_usd)

    async def _admit(self) -> None:
        """Refuse a call of a project over its daily token quota (QuotaExceeded)."""
        if self.usage.enabled and (project := project_or_none()) is not None:
            await self.usage.admit(project)

    def _observe(self, spec: ModelSpec, op: str, outcome: str, started: float,
                 usage: Usage | None = None, cost: float | None = None) -> None:
        if usage is not None and self.usage.enabled \
                and (project := project_or_none()) is not None:
            self.usage.record(project, usage.total_tokens)
        if not self.metrics.enabled:
            return
        self.metrics.provider_call(
            spec.id, op, outcome, time.perf_counter() - started,
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0, cost_usd=cost)


@dataclass
class _Call:
    """What a model call reports for metrics."""

    usage: Usage | None = None
    cost_usd: float | None = None


def _outcome(exc: BaseException) -> str:
    """A call's failure as a bounded label: the error's gRPC code, or its kind."""
    if isinstance(exc, RowforgeError):
        return exc.code
    if isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
        return "CANCELLED"
    return "ERROR"


_default: Providers | None = None


def default_providers() -> Providers:
    """The process's :class:`Providers` (created on first use)."""
    global _default
    if _default is None:
        _default = Providers()
    return _default
