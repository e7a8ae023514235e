"""Direct model calls on the client itself (the JamAI SDK's ``generate_chat_completions``,
``generate_embeddings``, ``model_info``, ``model_ids``)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, Literal, overload

from rowforge.clients import _convert as c
from rowforge.clients import types as t
from rowforge.clients._transport import (
    Emit,
    Next,
    Open,
    Plan,
    SyncStream,
    SyncTransport,
    Unary,
    one_call,
)
from rowforge.v1 import model_service_pb2 as mpb

MODEL = "ModelService"


def _chat_fields(request: t.ChatRequest) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "model": request.model,
        "messages": [mpb.ChatMessage(role=m.role, content=m.content,
                                     attachments=[mpb.Attachment(uri=u) for u in m.attachments])
                     for m in request.messages],
        "stop": list(request.stop or []),
    }
    for name in ("temperature", "max_tokens", "top_p"):
        if getattr(request, name) is not None:
            fields[name] = getattr(request, name)
    fmt = c.response_format_pb(request.response_format)
    if fmt is not None:
        fields["response_format"] = fmt
    return fields


def _completed(done: mpb.ChatCompleted) -> t.ChatCompletionResponse:
    return t.ChatCompletionResponse(
        id=done.id, model=done.model, text=done.message.content,
        finish_reason=c.finish_reason(done.finish_reason), usage=c.usage_py(done.usage),
        parsed=c.parsed_py(done))


def _chat_stream(request: mpb.ChatCompletionRequest) -> Plan[None]:
    stream = yield Open(MODEL, "ChatCompletion", request)
    model = completion_id = ""
    while (event := (yield Next(stream))) is not None:
        kind = event.WhichOneof("event")
        if kind == "started":
            model, completion_id = event.started.model, event.started.id
        elif kind == "delta":
            yield Emit(t.ChatCompletionChunk(id=completion_id, model=model,
                                             text=event.delta.text, index=event.delta.index))
        elif kind == "completed":
            done = event.completed
            yield Emit(t.ChatCompletionChunk(
                id=done.id or completion_id, model=done.model or model, text="",
                index=-1, finish_reason=c.finish_reason(done.finish_reason),
                usage=c.usage_py(done.usage), parsed=c.parsed_py(done)))


class ModelMethods:
    """Mixed into :class:`RowForge` and :class:`AsyncRowForge`; needs ``self._t``."""

    _t: SyncTransport

    @overload
    def generate_chat_completions(self, request: t.ChatRequest[Literal[True]]
                                  ) -> SyncStream[t.ChatCompletionChunk]: ...

    @overload
    def generate_chat_completions(self, request: t.ChatRequest[Literal[False]]
                                  ) -> t.ChatCompletionResponse: ...

    @overload
    def generate_chat_completions(self, request: t.ChatRequest[bool]
                                  ) -> t.ChatCompletionResponse | SyncStream[t.ChatCompletionChunk]:
        ...

    def generate_chat_completions(self, request: t.ChatRequest[Any]) -> Any:
        """A chat completion.

        Returns:
            ``stream=False``: a :class:`~rowforge.clients.types.ChatCompletionResponse`
            (``.text``, ``.usage``, ``.finish_reason``); ``stream=True``: an iterator of
            :class:`~rowforge.clients.types.ChatCompletionChunk` (``.text``).
        """
        fields = _chat_fields(request)
        if request.stream:
            return self._t.iterate(_chat_stream(mpb.ChatCompletionRequest(**fields)))
        return self._t.run(one_call(
            Unary(MODEL, "CreateChatCompletion", mpb.CreateChatCompletionRequest(**fields)),
            lambda r: _completed(r.completion)))

    def generate_embeddings(self, request: t.EmbeddingRequest) -> t.EmbeddingResponse:
        """Embed texts; ``.data[i].embedding`` is the vector of ``input[i]``."""
        texts = [request.input] if isinstance(request.input, str) else list(request.input)
        pb = mpb.EmbedRequest(model=request.model, input=texts, is_query=request.type == "query")
        return self._t.run(one_call(Unary(MODEL, "Embed", pb), lambda r: t.EmbeddingResponse(
            data=[t.EmbeddingData(index=e.index, embedding=list(e.embedding)) for e in r.data],
            model=r.model, usage=c.usage_py(r.usage))))

    def rerank(self, query: str, documents: Sequence[str], model: str = "", top_n: int = 0
               ) -> t.RerankResponse:
        """Score ``documents`` against ``query``, best first."""
        pb = mpb.RerankRequest(model=model, query=query, documents=list(documents), top_n=top_n)
        return self._t.run(one_call(Unary(MODEL, "Rerank", pb), lambda r: t.RerankResponse(
            results=[t.RerankResult(index=x.index, relevance_score=x.relevance_score)
                     for x in r.results], model=r.model)))

    def model_info(self, model: str = "", capabilities: Sequence[str] | None = None
                   ) -> t.ModelInfoResponse:
        """The server's models (only those with all ``capabilities``; only ``model`` if
        given); ``.data`` lists them."""
        pb = mpb.ListModelsRequest(capabilities=[c.capability_pb(x) for x in capabilities or []])

        def parse(resp: mpb.ListModelsResponse) -> t.ModelInfoResponse:
            items = [c.model_py(m) for m in resp.items if not model or m.id == model]
            return t.ModelInfoResponse(data=items)

        return self._t.run(one_call(Unary(MODEL, "ListModels", pb, idempotent=True), parse))

    def model_ids(self, prefer: str = "", capabilities: Sequence[str] | None = None) -> list[str]:
        """Model ids with all ``capabilities`` (``prefer`` first when present)."""
        pb = mpb.ListModelsRequest(capabilities=[c.capability_pb(x) for x in capabilities or []])

        def parse(resp: mpb.ListModelsResponse) -> list[str]:
            ids = [m.id for m in resp.items]
            if prefer in ids:
                ids.remove(prefer)
                ids.insert(0, prefer)
            return ids

        return self._t.run(one_call(Unary(MODEL, "ListModels", pb, idempotent=True), parse))

    def model_names(self, prefer: str = "", capabilities: Sequence[str] | None = None
                    ) -> list[str]:
        """Deprecated: use :meth:`model_ids`."""
        warnings.warn("model_names() is deprecated; use model_ids()", DeprecationWarning,
                      stacklevel=2)
        return self.model_ids(prefer, capabilities)
