"""ModelService over a real server: built-in offline models and the litellm path to the fake
OpenAI-compatible server over real HTTP."""

from __future__ import annotations

import json

import grpc
import jsonschema
import pytest
from google.protobuf import json_format
from google.rpc import error_details_pb2

from rowforge.v1 import common_pb2, model_service_pb2_grpc
from rowforge.v1 import model_service_pb2 as pb
from tests.support.status import detail_of as details


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> model_service_pb2_grpc.ModelServiceStub:
    return model_service_pb2_grpc.ModelServiceStub(channel)


def user(text: str) -> pb.ChatMessage:
    return pb.ChatMessage(role="user", content=text)


async def test_list_models_filters_by_capability(stub) -> None:  # type: ignore[no-untyped-def]
    everything = {m.id: m for m in (await stub.ListModels(pb.ListModelsRequest())).items}
    assert {"rowforge/chat", "rowforge/embed", "rowforge/rerank", "fake/gpt"} <= set(everything)
    assert everything["rowforge/embed"].embedding_size == 384
    embed = await stub.ListModels(pb.ListModelsRequest(capabilities=[common_pb2.CAPABILITY_EMBED]))
    assert {m.id for m in embed.items} >= {"rowforge/embed", "fake/embed"}
    assert all(common_pb2.CAPABILITY_EMBED in m.capabilities for m in embed.items)
    both = await stub.ListModels(pb.ListModelsRequest(
        capabilities=[common_pb2.CAPABILITY_CHAT, common_pb2.CAPABILITY_IMAGE]))
    assert "rowforge/chat" in {m.id for m in both.items}
    assert "rowforge/embed" not in {m.id for m in both.items}


@pytest.mark.parametrize("model", ["rowforge/chat", "fake/gpt"])
async def test_streamed_chat_completion(stub, model: str) -> None:  # type: ignore[no-untyped-def]
    events = [e async for e in stub.ChatCompletion(pb.ChatCompletionRequest(
        model=model, messages=[pb.ChatMessage(role="system", content="Be brief."),
                               user("Explain what a vector database is.")],
        max_tokens=200))]
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[0] == "started" and kinds[-1] == "completed"
    assert set(kinds[1:-1]) == {"delta"} and len(kinds) > 3
    assert [e.delta.index for e in events[1:-1]] == list(range(len(events) - 2))
    done = events[-1].completed
    assert done.message.content == "".join(e.delta.text for e in events[1:-1])
    assert done.usage.completion_tokens > 0 and done.usage.prompt_tokens > 0
    assert done.usage.total_tokens == done.usage.prompt_tokens + done.usage.completion_tokens
    assert done.finish_reason == pb.FINISH_REASON_STOP
    assert done.model == model


async def test_chat_is_deterministic_and_honours_max_tokens(stub) -> None:  # type: ignore[no-untyped-def]
    req = pb.CreateChatCompletionRequest(model="rowforge/chat",
                                         messages=[user("Write about oceans " * 20)], max_tokens=5)
    a = (await stub.CreateChatCompletion(req)).completion
    b = (await stub.CreateChatCompletion(req)).completion
    assert a.message.content == b.message.content
    assert a.finish_reason == pb.FINISH_REASON_LENGTH
    assert a.usage.completion_tokens <= 5


@pytest.mark.parametrize("model", ["rowforge/chat", "fake/gpt"])
async def test_json_schema_output_is_valid_and_parsed(stub, model: str) -> None:  # type: ignore[no-untyped-def]
    schema = {"type": "object", "properties": {
        "title": {"type": "string", "maxLength": 40},
        "features": {"type": "array", "items": {"type": "string"}, "minItems": 2},
        "rating": {"type": "integer", "minimum": 1, "maximum": 5}},
        "required": ["title", "features", "rating"], "additionalProperties": False}
    fmt = pb.ResponseFormat(type=pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA, name="Product",
                            schema=json_format.ParseDict(schema, pb.ResponseFormat().schema))
    reply = await stub.CreateChatCompletion(pb.CreateChatCompletionRequest(
        model=model, messages=[user("Describe wireless headphones")], response_format=fmt))
    parsed = json_format.MessageToDict(reply.completion.parsed)
    jsonschema.validate(parsed, schema)
    assert json.loads(reply.completion.message.content) == parsed
    events = [e async for e in stub.ChatCompletion(pb.ChatCompletionRequest(
        model=model, messages=[user("Describe wireless headphones")], response_format=fmt))]
    jsonschema.validate(json_format.MessageToDict(events[-1].completed.parsed), schema)


@pytest.mark.parametrize("model", ["rowforge/embed", "fake/embed"])
async def test_embed(stub, model: str) -> None:  # type: ignore[no-untyped-def]
    reply = await stub.Embed(pb.EmbedRequest(model=model, input=["Hello world", "Bonjour"]))
    assert [d.index for d in reply.data] == [0, 1]
    assert len({len(d.embedding) for d in reply.data}) == 1
    assert reply.usage.prompt_tokens > 0


async def test_builtin_embedding_has_a_notion_of_similarity(stub) -> None:  # type: ignore[no-untyped-def]
    texts = ["The cat sat on the mat", "A cat was sitting on a mat",
             "Quarterly revenue grew by ten percent"]
    vecs = [list(d.embedding) for d in (await stub.Embed(pb.EmbedRequest(input=texts))).data]

    def cos(a, b):  # type: ignore[no-untyped-def]
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cos(vecs[0], vecs[1]) > cos(vecs[0], vecs[2]) + 0.2


async def test_rerank(stub) -> None:  # type: ignore[no-untyped-def]
    reply = await stub.Rerank(pb.RerankRequest(
        query="how do I reset my password", documents=[
            "Our office is closed on Sundays.", "To reset your password, open Settings.",
            "Passwords must have 12 characters."]))
    assert reply.results[0].index == 1
    scores = [r.relevance_score for r in reply.results]
    assert scores == sorted(scores, reverse=True)


@pytest.mark.parametrize(("request_", "code", "field"), [
    (pb.CreateChatCompletionRequest(model="rowforge/chat"), grpc.StatusCode.INVALID_ARGUMENT,
     "messages"),
    (pb.CreateChatCompletionRequest(model="rowforge/chat", messages=[
        pb.ChatMessage(role="wizard", content="hi")]), grpc.StatusCode.INVALID_ARGUMENT,
     "messages[0].role"),
    (pb.CreateChatCompletionRequest(model="rowforge/chat", messages=[user("hi")],
                                    temperature=3.5), grpc.StatusCode.INVALID_ARGUMENT,
     "temperature"),
    (pb.CreateChatCompletionRequest(model="rowforge/chat", messages=[user("hi")], max_tokens=0),
     grpc.StatusCode.INVALID_ARGUMENT, "max_tokens"),
    (pb.CreateChatCompletionRequest(model="nope/model", messages=[user("hi")]),
     grpc.StatusCode.NOT_FOUND, None),
    (pb.CreateChatCompletionRequest(model="rowforge/embed", messages=[user("hi")]),
     grpc.StatusCode.INVALID_ARGUMENT, None),
])
async def test_bad_chat_requests(stub, request_, code, field) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.CreateChatCompletion(request_)
    assert err.value.code() == code
    if field:
        bad = details(err.value, error_details_pb2.BadRequest)
        assert field in [v.field for v in bad.field_violations]
    # The streaming variant refuses the same way, before any event.
    with pytest.raises(grpc.aio.AioRpcError) as err2:
        # Both requests share their field numbers, so the bytes convert as they are.
        streamed = pb.ChatCompletionRequest.FromString(request_.SerializeToString())
        async for _ in stub.ChatCompletion(streamed):
            pass
    assert err2.value.code() == code


async def test_bad_embed_requests(stub) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Embed(pb.EmbedRequest(model="rowforge/embed"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Embed(pb.EmbedRequest(model="rowforge/chat", input=["x"]))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_provider_rate_limit_maps_to_resource_exhausted(stub) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.CreateChatCompletion(pb.CreateChatCompletionRequest(
            model="fake/gpt", messages=[user("hello [[fault:429,retry_after=7]]")]))
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    retry = details(err.value, error_details_pb2.RetryInfo)
    assert retry is not None and retry.retry_delay.seconds == 7
    assert details(err.value, error_details_pb2.ErrorInfo).reason == "PROVIDER_RATE_LIMITED"


@pytest.mark.parametrize(("fault", "code"), [
    ("503", grpc.StatusCode.UNAVAILABLE),
    ("500", grpc.StatusCode.UNAVAILABLE),
    ("malformed", grpc.StatusCode.UNAVAILABLE),
])
async def test_provider_faults_map_to_unavailable(stub, fault: str, code) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.CreateChatCompletion(pb.CreateChatCompletionRequest(
            model="fake/gpt", messages=[user(f"hello [[fault:{fault}]]")]))
    assert err.value.code() == code


async def test_unknown_model_at_the_provider_is_not_found(stub) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.CreateChatCompletion(pb.CreateChatCompletionRequest(
            model="fake/unknown", messages=[user("hello")]))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in stub.ChatCompletion(pb.ChatCompletionRequest(
                model="fake/unknown", messages=[user("hello")])):
            pass
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_stream_cancellation_closes_the_provider_call(stub, fake_openai) -> None:  # type: ignore[no-untyped-def]
    fake_openai.token_delay = 0.05
    try:
        call = stub.ChatCompletion(pb.ChatCompletionRequest(
            model="fake/gpt", messages=[user("a long answer please " * 30)], max_tokens=500))
        await call.read()
        await call.read()
        assert fake_openai.in_flight >= 1
        call.cancel()
        import asyncio

        for _ in range(100):
            if fake_openai.in_flight == 0:
                break
            await asyncio.sleep(0.05)
        assert fake_openai.in_flight == 0
    finally:
        fake_openai.token_delay = 0.0


@pytest.mark.parametrize("call, field", [
    ("embed_one", "input[1]"), ("embed_total", "input"), ("rerank_doc", "documents[2]"),
    ("rerank_query", "query"), ("rerank_count", "documents"),
])
async def test_oversized_embed_and_rerank_inputs_are_refused(stub, call: str,  # type: ignore[no-untyped-def]
                                                             field: str) -> None:
    big = "word " * 20_001  # 100,005 characters
    requests = {
        "embed_one": lambda: stub.Embed(pb.EmbedRequest(input=["ok", big])),
        "embed_total": lambda: stub.Embed(pb.EmbedRequest(input=[big[:99_000]] * 41)),
        "rerank_doc": lambda: stub.Rerank(pb.RerankRequest(query="q", documents=["a", "b", big])),
        "rerank_query": lambda: stub.Rerank(pb.RerankRequest(query=big, documents=["a"])),
        "rerank_count": lambda: stub.Rerank(pb.RerankRequest(query="q", documents=["d"] * 1001)),
    }
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await requests[call]()
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    bad = details(exc.value, error_details_pb2.BadRequest)
    assert [v.field for v in bad.field_violations] == [field]
    assert len(exc.value.details()) < 1000  # says how long, never echoes the text


async def test_a_large_embed_runs_beside_cheap_calls(stub) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    texts = [f"document {i} " + "lorem ipsum dolor sit amet " * 3600 for i in range(38)]
    done: list[str] = []

    async def big() -> None:
        reply = await stub.Embed(pb.EmbedRequest(model="rowforge/embed", input=texts))
        assert len(reply.data) == len(texts)
        done.append("big")

    async def cheap() -> None:
        await asyncio.sleep(0.05)  # the big call is in flight
        reply = await stub.ListModels(pb.ListModelsRequest())
        assert reply.items
        done.append("cheap")

    await asyncio.gather(big(), cheap())
    # Embedding ~3.7 MB takes far longer than a ListModels: the cheap call was served while
    # the big one ran off the event loop (on the loop, it would have waited for the end).
    assert done == ["cheap", "big"]
