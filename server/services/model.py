"""ModelService: list models, chat completions (streamed and unary), embeddings, reranking."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc

from rowforge import codec
from rowforge.server import providers
from rowforge.server.auth import current_project
from rowforge.server.errors import InvalidArgument, Violations
from rowforge.server.files.store import FileStore
from rowforge.server.providers.messages import Attachment, Message
from rowforge.server.providers.registry import ModelRegistry
from rowforge.server.providers.results import ChatChunk, Usage
from rowforge.server.services._convert import struct_to_dict
from rowforge.v1 import common_pb2, model_service_pb2_grpc
from rowforge.v1 import model_service_pb2 as pb

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ModelService"].full_name
MAX_EMBED_INPUTS = 2048
#: Longest text Embed and Rerank take (a query, an input, a document), in characters: above
#: every hosted embedding model's context (OpenAI's 8,191 tokens is ~32k characters).
MAX_TEXT_CHARS = 100_000
#: Most characters one Embed or Rerank call may carry in all.
MAX_CALL_CHARS = 4_000_000
MAX_RERANK_DOCUMENTS = 1000

CAPABILITY_NAMES = {
    common_pb2.CAPABILITY_CHAT: "chat",
    common_pb2.CAPABILITY_EMBED: "embed",
    common_pb2.CAPABILITY_RERANK: "rerank",
    common_pb2.CAPABILITY_IMAGE: "image",
    common_pb2.CAPABILITY_AUDIO: "audio",
}
CAPABILITY_ENUMS = {name: value for value, name in CAPABILITY_NAMES.items()}
FINISH_REASONS = {
    "stop": pb.FINISH_REASON_STOP,
    "length": pb.FINISH_REASON_LENGTH,
    "content_filter": pb.FINISH_REASON_CONTENT_FILTER,
}


def capability_names(values: Any, field: str = "capabilities") -> list[str]:
    names = []
    for i, value in enumerate(values):
        if value not in CAPABILITY_NAMES:
            raise InvalidArgument.field(f"{field}[{i}]", "unknown capability")
        names.append(CAPABILITY_NAMES[value])
    return names


def usage_pb(usage: Usage | None) -> common_pb2.Usage:
    if usage is None:
        return common_pb2.Usage()
    return common_pb2.Usage(prompt_tokens=usage.prompt_tokens,
                            completion_tokens=usage.completion_tokens,
                            total_tokens=usage.total_tokens)


CHAT_ROLES = {pb.CHAT_ROLE_SYSTEM: "system", pb.CHAT_ROLE_USER: "user",
              pb.CHAT_ROLE_ASSISTANT: "assistant"}

class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    """Direct model calls (the seed's generate_chat_completions / generate_embeddings)."""

    def __init__(self, models: ModelRegistry, files: FileStore | None) -> None:
        self.models = models
        self.files = files

    async def ListModels(self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext
                         ) -> pb.ListModelsResponse:
        wanted = capability_names(request.capabilities)
        return pb.ListModelsResponse(items=[
            pb.Model(
                id=spec.id, name=spec.name or spec.id,
                capabilities=[CAPABILITY_ENUMS[c] for c in sorted(spec.capabilities)
                              if c in CAPABILITY_ENUMS],
                context_length=spec.context_length, languages=list(spec.languages),
                owned_by=spec.owned_by, embedding_size=spec.embedding_size,
                rpm=spec.rpm, tpm=spec.tpm)
            for spec in self.models.list(wanted)
        ])

    async def _prepare(self, request: Any) -> tuple[Any, list[Message], dict[str, Any]]:
        v = Violations()
        v.check(bool(request.messages), "messages", "at least one message is required")
        roles = []
        for i, m in enumerate(request.messages):
            role = CHAT_ROLES.get(m.chat_role, "") if m.chat_role else m.role
            roles.append(role)
            v.check(role in {"system", "user", "assistant"}, f"messages[{i}].role",
                    "must be system, user or assistant (or chat_role CHAT_ROLE_...)")
            v.check(not (m.chat_role and m.role and m.role != role), f"messages[{i}].chat_role",
                    f"{pb.ChatRole.Name(m.chat_role) if m.chat_role in CHAT_ROLES else m.chat_role}"
                    f" and role {m.role!r} disagree; send one")
            v.check(bool(m.content) or bool(m.attachments), f"messages[{i}].content",
                    "must not be empty")
        if request.HasField("temperature"):
            v.check(0.0 <= request.temperature <= 2.0, "temperature", "must be between 0 and 2")
        if request.HasField("max_tokens"):
            v.check(request.max_tokens >= 1, "max_tokens", "must be at least 1")
        if request.HasField("top_p"):
            v.check(0.0 < request.top_p <= 1.0, "top_p", "must be in (0, 1]")
        fmt = request.response_format
        if fmt.type == pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA:
            v.check(bool(fmt.schema.fields), "response_format.schema",
                    "is required for RESPONSE_FORMAT_TYPE_JSON_SCHEMA")
        v.raise_if_any()
        spec = self.models.require(request.model or self.models.default("chat").id, "chat")
        messages = [Message(role=roles[i], content=m.content,
                            attachments=tuple([await self._attachment(a, i, j)
                                               for j, a in enumerate(m.attachments)]))
                    for i, m in enumerate(request.messages)]
        params: dict[str, Any] = {
            "temperature": request.temperature if request.HasField("temperature") else None,
            "max_tokens": request.max_tokens if request.HasField("max_tokens") else None,
            "top_p": request.top_p if request.HasField("top_p") else None,
            "stop": list(request.stop) or None,
            "response_format": _response_format(fmt),
        }
        return spec, messages, params

    async def _attachment(self, a: pb.Attachment, i: int, j: int) -> Attachment:
        field = f"messages[{i}].attachments[{j}]"
        if a.uri.startswith(("http://", "https://")):
            return Attachment(content_type=a.content_type or "image/*", url=a.uri)
        files = self.files
        if a.uri.startswith("file://") and files is not None:
            data, content_type = await files.read_for_model(current_project(), a.uri)
            return Attachment(content_type=a.content_type or content_type, data=data)
        raise InvalidArgument.field(f"{field}.uri", "must be a FileService URI or an http(s) URL")

    async def ChatCompletion(self, request: pb.ChatCompletionRequest,
                             context: grpc.aio.ServicerContext
                             ) -> AsyncIterator[pb.ChatCompletionResponse]:
        spec, messages, params = await self._prepare(request)
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        yield pb.ChatCompletionResponse(started=pb.ChatStarted(model=spec.id, id=completion_id))
        parts: list[str] = []
        index = 0
        final: ChatChunk | None = None
        async for chunk in providers.stream_chat(spec, messages, **params):
            if chunk.text:
                parts.append(chunk.text)
                yield pb.ChatCompletionResponse(delta=pb.ChatDelta(text=chunk.text, index=index))
                index += 1
            if chunk.is_final:
                final = chunk
        text = "".join(parts)
        completed = _completed(spec.id, completion_id, text, final, params["response_format"],
                               params["stop"])
        yield pb.ChatCompletionResponse(completed=completed)

    async def CreateChatCompletion(self, request: pb.CreateChatCompletionRequest,
                                   context: grpc.aio.ServicerContext
                                   ) -> pb.CreateChatCompletionResponse:
        spec, messages, params = await self._prepare(request)
        result = await providers.chat(spec, messages, **params)
        completed = pb.ChatCompleted(
            message=pb.ChatMessage(role="assistant", chat_role=pb.CHAT_ROLE_ASSISTANT, content=result.text),
            finish_reason=FINISH_REASONS.get(result.finish_reason, pb.FINISH_REASON_UNSPECIFIED),
            usage=usage_pb(result.usage), model=spec.id,
            id=f"chatcmpl-{uuid.uuid4().hex[:24]}")
        if result.parsed is not None:
            completed.parsed.CopyFrom(codec.value_to_pb(result.parsed))
        return pb.CreateChatCompletionResponse(completion=completed)

    async def Embed(self, request: pb.EmbedRequest, context: grpc.aio.ServicerContext
                    ) -> pb.EmbedResponse:
        v = Violations()
        v.check(len(request.input) > 0, "input", "at least one text is required")
        v.check(len(request.input) <= MAX_EMBED_INPUTS, "input",
                f"at most {MAX_EMBED_INPUTS} texts per call")
        _check_texts(v, "input", request.input)
        v.raise_if_any()
        spec = self.models.require(request.model or self.models.default("embed").id,
                                       "embed")
        result = await providers.embed(spec, list(request.input), is_query=request.is_query)
        return pb.EmbedResponse(
            data=[pb.Embedding(index=i, embedding=row.tolist())
                  for i, row in enumerate(result.vectors)],
            model=spec.id, usage=usage_pb(result.usage))

    async def Rerank(self, request: pb.RerankRequest, context: grpc.aio.ServicerContext
                     ) -> pb.RerankResponse:
        v = Violations()
        v.check(bool(request.query.strip()), "query", "must not be empty")
        v.check(len(request.documents) > 0, "documents", "at least one document is required")
        v.check(request.top_n >= 0, "top_n", "must not be negative")
        v.check(len(request.documents) <= MAX_RERANK_DOCUMENTS, "documents",
                f"at most {MAX_RERANK_DOCUMENTS} documents per call")
        v.check(len(request.query) <= MAX_TEXT_CHARS, "query",
                f"is {len(request.query)} characters; at most {MAX_TEXT_CHARS}")
        _check_texts(v, "documents", request.documents)
        v.raise_if_any()
        spec = self.models.require(request.model or self.models.default("rerank").id,
                                       "rerank")
        ranked = await providers.rerank(spec, request.query, list(request.documents),
                                        top_n=request.top_n)
        return pb.RerankResponse(
            results=[pb.RerankResult(index=i, relevance_score=s) for i, s in ranked],
            model=spec.id)


def _check_texts(v: Violations, field: str, texts: Sequence[str]) -> None:
    """Each text at most MAX_TEXT_CHARS, all of them at most MAX_CALL_CHARS."""
    total = 0
    for i, text in enumerate(texts):
        total += len(text)
        v.check(len(text) <= MAX_TEXT_CHARS, f"{field}[{i}]",
                f"is {len(text)} characters; at most {MAX_TEXT_CHARS} per text")
    v.check(total <= MAX_CALL_CHARS, field,
            f"{total} characters in all; at most {MAX_CALL_CHARS} per call")


def _response_format(fmt: pb.ResponseFormat) -> dict[str, Any] | None:
    if fmt.type == pb.RESPONSE_FORMAT_TYPE_JSON_OBJECT:
        return {"type": "json_object"}
    if fmt.type == pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA:
        return {"type": "json_schema", "json_schema": {
            "name": fmt.name or "response", "schema": struct_to_dict(fmt.schema, "response_format.schema"),
            "strict": fmt.strict}}
    return None


def _completed(model: str, completion_id: str, text: str, final: ChatChunk | None,
               response_format: dict[str, Any] | None,
               stop: list[str] | None = None) -> pb.ChatCompleted:
    completed = pb.ChatCompleted(
        message=pb.ChatMessage(role="assistant", chat_role=pb.CHAT_ROLE_ASSISTANT, content=text),
        finish_reason=FINISH_REASONS.get((final.finish_reason if final else None) or "stop",
                                         pb.FINISH_REASON_UNSPECIFIED),
        usage=usage_pb(final.usage if final else None), model=model, id=completion_id)
    if response_format is not None:
        parsed = providers.parse_json_output(
            text, response_format, finish_reason=final.finish_reason if final else None,
            stop=stop)
        completed.parsed.CopyFrom(codec.value_to_pb(parsed))
    return completed
