"""Both routes to an OpenAI-compatible provider, over real HTTP against the fake server.

Every test taking the ``transport`` fixture runs twice: through the ``openai`` transport (the
fast path) and through ``litellm``; callers must not be able to tell them apart (results,
usage, cost, errors, retries, cancellation). litellm is imported with
``LITELLM_LOCAL_MODEL_COST_MAP`` set (by the provider layer), so these tests never need the
internet.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import jsonschema
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rowforge.server.errors import (
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from rowforge.server.providers import (
    Attachment,
    ChatResult,
    Message,
    ModelRegistry,
    ModelSpec,
    chat,
    default_providers,
    embed,
    is_retryable,
    json_schema_format,
    litellm_client,
    rerank,
    stream_chat,
    with_retries,
)
from tests.fakes.openai_server import FakeOpenAI
from tests.support.waiting import eventually

KEY_ENV = "ROWFORGE_TEST_PROVIDERS_KEY"
os.environ[KEY_ENV] = "sk-test-providers"

SCHEMA = {"type": "object", "required": ["sentiment", "rating"], "additionalProperties": False,
          "properties": {"sentiment": {"type": "string",
                                       "enum": ["positive", "negative", "neutral"]},
                         "rating": {"type": "integer", "minimum": 1, "maximum": 5}}}


@pytest.fixture(params=["openai", "litellm"])
def transport(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
async def fake(transport: str) -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI(api_key="sk-test-providers") as server:
        yield server
        await default_providers().aclose()


@pytest.fixture
async def openai_fake() -> AsyncIterator[FakeOpenAI]:
    """The fake, for tests of the ``openai`` transport alone."""
    async with FakeOpenAI(api_key="sk-test-providers") as server:
        yield server


def specs(fake: FakeOpenAI, transport: str = "openai") -> ModelRegistry:
    base = {"api_base": fake.base_url, "api_key_env": KEY_ENV, "transport": transport}
    return ModelRegistry.from_config([
        {"id": "fake/gpt", "route": "openai/fake-gpt", "capabilities": ["chat", "image", "audio"],
         **base},
        {"id": "fake/gone", "route": "openai/unknown-model", "capabilities": ["chat"], **base},
        {"id": "fake/embed", "route": "openai/fake-embed", "capabilities": ["embed"],
         "embedding_size": 64, **base},
        {"id": "fake/embed-wrong-size", "route": "openai/fake-embed", "capabilities": ["embed"],
         "embedding_size": 32, **base},
        {"id": "fake/gpt-nokey", "route": "openai/fake-gpt", "capabilities": ["chat"],
         "api_base": fake.base_url, "api_key_env": "ROWFORGE_TEST_UNSET_KEY_VAR",
         "transport": transport},
    ], include_builtins=False)


def gpt(fake: FakeOpenAI, transport: str) -> ModelSpec:
    return specs(fake, transport).get("fake/gpt")


# --- happy paths -------------------------------------------------------------------------

async def test_streaming_deltas_and_usage(fake: FakeOpenAI, transport: str) -> None:
    chunks = [c async for c in stream_chat(gpt(fake, transport), [Message("user", "Hello there")],
                                           temperature=0.2, max_tokens=50)]
    *deltas, final = chunks
    assert "".join(c.text for c in deltas) == "Hello! How can I help you today?"
    assert len(deltas) == 9  # one SSE chunk per piece arrives as its own delta
    assert final.text == "" and final.finish_reason == "stop" and final.model == "fake/gpt"
    assert final.usage is not None and final.usage.completion_tokens == 9
    assert final.usage.prompt_tokens > 0
    body = fake.requests_to("/v1/chat/completions")[-1].json
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["model"] == "fake-gpt" and body["max_tokens"] == 50
    assert body["temperature"] == 0.2
    headers = fake.requests_to("/v1/chat/completions")[-1].headers
    assert headers["Authorization"] == "Bearer sk-test-providers"


async def test_non_streaming_chat_and_length(fake: FakeOpenAI, transport: str) -> None:
    messages = [Message("system", "Be brief."), Message("user", "My name is Alice"),
                Message("assistant", "Hi Alice!"), Message("user", "What's my name?")]
    result = await chat(gpt(fake, transport), messages)
    assert result.text == "Your name is Alice." and result.finish_reason == "stop"
    assert result.usage.total_tokens == result.usage.prompt_tokens + 5
    cut = await chat(gpt(fake, transport), [Message("user", "Explain the water cycle in detail.")],
                     max_tokens=2)
    assert cut.finish_reason == "length" and cut.usage.completion_tokens == 2


async def test_default_max_tokens_is_the_specs(fake: FakeOpenAI, transport: str) -> None:
    await chat(gpt(fake, transport), [Message("user", "hi")])
    assert fake.requests_to("/v1/chat/completions")[-1].json["max_tokens"] == 4096


async def test_known_price_gives_a_cost(fake: FakeOpenAI, transport: str) -> None:
    spec = ModelSpec(id="openai/gpt-4o-mini", route="openai/gpt-4o-mini",
                     api_base=fake.base_url, api_key_env=KEY_ENV, transport=transport)
    result = await chat(spec, [Message("user", "Hello")])
    assert result.cost_usd is not None and result.cost_usd > 0
    unknown = await chat(gpt(fake, transport), [Message("user", "Hello")])
    assert unknown.cost_usd is None


async def test_json_schema_round_trip(fake: FakeOpenAI, transport: str) -> None:
    result = await chat(gpt(fake, transport), [Message("user", "A positive review, five stars!")],
                        response_format=json_schema_format(SCHEMA, name="review"))
    jsonschema.validate(result.parsed, SCHEMA)
    assert result.parsed["sentiment"] == "positive"
    sent = fake.requests_to("/v1/chat/completions")[-1].json["response_format"]
    assert sent["type"] == "json_schema" and sent["json_schema"]["schema"] == SCHEMA


async def test_attachments_arrive_as_content_parts(fake: FakeOpenAI, transport: str) -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(200))
    wav = b"RIFF" + bytes(60)
    result = await chat(gpt(fake, transport), [Message("user", "What is this?", attachments=(
        Attachment("image/png", data=png), Attachment("audio/wav", data=wav)))])
    assert f"image (image/png, {len(png)} bytes)" in result.text
    assert f"audio clip (audio/wav, {len(wav)} bytes)" in result.text
    parts = fake.requests_to("/v1/chat/completions")[-1].json["messages"][0]["content"]
    assert parts[0] == {"type": "text", "text": "What is this?"}
    assert parts[1]["type"] == "image_url"
    assert parts[1]["image_url"]["url"] == "data:image/png;base64," + \
        base64.b64encode(png).decode()
    assert parts[2] == {"type": "input_audio", "input_audio": {
        "data": base64.b64encode(wav).decode(), "format": "wav"}}


async def test_embeddings(fake: FakeOpenAI, transport: str) -> None:
    result = await embed(specs(fake, transport).get("fake/embed"), ["first text", "second text", "third"])
    assert result.vectors.shape == (3, 64) and result.vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(result.vectors, axis=1), 1.0, atol=1e-5)
    assert result.usage.prompt_tokens == 5
    again = await embed(specs(fake, transport).get("fake/embed"), ["second text"])
    assert np.allclose(again.vectors[0], result.vectors[1], atol=1e-6)
    if transport == "openai":  # base64 float32, as the official SDK asks (litellm: floats)
        assert {r.json.get("encoding_format") for r in fake.requests_to(
            "/v1/embeddings")} == {"base64"}


def test_embeddings_as_floats_are_read_too() -> None:
    """A server that ignores ``encoding_format`` answers with float arrays."""
    from rowforge.server.providers.openai_backend import _vector

    as_floats = _vector([0.5, -0.25])
    as_base64 = _vector(base64.b64encode(np.asarray([0.5, -0.25], "<f4").tobytes()).decode())
    assert np.array_equal(np.asarray(as_floats, np.float32), as_base64)


async def test_embedding_size_mismatch_is_a_config_error(fake: FakeOpenAI, transport: str) -> None:
    with pytest.raises(Internal) as info:
        await embed(specs(fake, transport).get("fake/embed-wrong-size"), ["x"])
    assert info.value.reason == "EMBEDDING_SIZE_MISMATCH"


def rerank_spec(fake: FakeOpenAI, transport: str) -> ModelSpec:
    """A Cohere/Jina-style rerank model: the fake's ``/v1/rerank`` on both routes."""
    if transport == "openai":
        return ModelSpec(id="fake/rerank", route="openai/fake-rerank", api_base=fake.base_url,
                         api_key_env=KEY_ENV, capabilities=frozenset({"rerank"}),
                         transport="openai")
    return ModelSpec(id="fake/rerank", route="cohere/rerank-english-v3.0",
                     api_base=fake.base_url.removesuffix("/v1"), api_key_env=KEY_ENV,
                     capabilities=frozenset({"rerank"}), transport="litellm")


async def test_rerank(fake: FakeOpenAI, transport: str) -> None:
    ranked = await rerank(rerank_spec(fake, transport), "capital of France",
                          ["bananas", "Paris is the capital of France"])
    assert [i for i, _ in ranked] == [1, 0] and ranked[0][1] > ranked[1][1]
    sent = [r for r in fake.requests if r.path.endswith("/rerank")][-1]
    assert sent.json["query"] == "capital of France"
    assert sent.headers["Authorization"] == "Bearer sk-test-providers"
    top = await rerank(rerank_spec(fake, transport), "capital of France",
                       ["bananas", "Paris is the capital of France", "apples"], top_n=1)
    assert [i for i, _ in top] == [1]


@pytest.mark.parametrize("status", [429, 503, "malformed"])
async def test_rerank_faults(fake: FakeOpenAI, transport: str, status: int | str) -> None:
    fake.fail_next(1, status, retry_after=1)
    with pytest.raises((ResourceExhausted, Unavailable)) as info:
        await rerank(rerank_spec(fake, transport), "q", ["a", "b"])
    expected = {429: "PROVIDER_RATE_LIMITED", 503: "PROVIDER_UNAVAILABLE",
                "malformed": "PROVIDER_BAD_RESPONSE"}[status]
    assert info.value.reason == expected


async def test_chat_model_reranks_through_json(fake: FakeOpenAI, transport: str) -> None:
    ranked = await rerank(gpt(fake, transport), "query", ["a", "b"], top_n=1)
    assert len(ranked) == 1 and ranked[0][0] in (0, 1)
    assert fake.requests_to("/v1/chat/completions")[-1].json["response_format"]["type"] == \
        "json_schema"


async def test_concurrent_requests_are_counted(fake: FakeOpenAI, transport: str) -> None:
    fake.latency = 0.2
    await asyncio.gather(*(chat(gpt(fake, transport), [Message("user", f"hi {i}")]) for i in range(4)))
    assert fake.max_in_flight == 4 and fake.in_flight == 0


# --- faults ------------------------------------------------------------------------------

@pytest.mark.parametrize(("status", "options", "error", "reason", "retry_after"), [
    (429, {"retry_after": 2}, ResourceExhausted, "PROVIDER_RATE_LIMITED", 2.0),
    (429, {"retry_after_ms": 1500}, ResourceExhausted, "PROVIDER_RATE_LIMITED", 1.5),
    (429, {}, ResourceExhausted, "PROVIDER_RATE_LIMITED", None),
    (500, {}, Unavailable, "PROVIDER_UNAVAILABLE", None),
    (502, {}, Unavailable, "PROVIDER_UNAVAILABLE", None),
    (503, {"retry_after": 3}, Unavailable, "PROVIDER_UNAVAILABLE", 3.0),
    (400, {}, InvalidArgument, "PROVIDER_BAD_REQUEST", None),
    (400, {"code": "context_length_exceeded",
           "message": "This model's maximum context length is 8192 tokens. However, your "
                      "messages resulted in 9000 tokens."},
     InvalidArgument, "CONTEXT_WINDOW_EXCEEDED", None),
    (401, {}, Internal, "PROVIDER_AUTH_FAILED", None),
    (403, {}, Internal, "PROVIDER_AUTH_FAILED", None),
    ("malformed", {}, Unavailable, "PROVIDER_BAD_RESPONSE", None),
])
@pytest.mark.parametrize("streaming", [True, False])
async def test_faults_map_to_domain_errors(fake: FakeOpenAI, transport: str, status: int | str, options: dict,
                                           error: type, reason: str,
                                           retry_after: float | None, streaming: bool) -> None:
    fake.fail_next(1, status, **options)
    messages = [Message("user", "Explain the seasons on Earth, please.")]
    with pytest.raises(error) as info:
        if streaming:
            async for _ in stream_chat(gpt(fake, transport), messages):
                pass
        else:
            await chat(gpt(fake, transport), messages)
    assert info.value.reason == reason
    assert info.value.retry_after == retry_after
    assert info.value.metadata["model"] == "fake/gpt"
    assert len(fake.requests) == 1, "no route may retry on its own"
    # The fault was used up: the next call succeeds.
    assert (await chat(gpt(fake, transport), messages)).text


async def test_timeout_is_unavailable(fake: FakeOpenAI, transport: str) -> None:
    fake.fail_next(1, "timeout")
    start = time.monotonic()
    with pytest.raises(Unavailable) as info:
        await chat(gpt(fake, transport), [Message("user", "hello")], timeout=0.5)
    assert info.value.reason == "PROVIDER_TIMEOUT"
    assert time.monotonic() - start < 5


async def test_slow_tokens_within_the_timeout_are_fine(fake: FakeOpenAI, transport: str) -> None:
    fake.token_delay = 0.02
    result = await chat(gpt(fake, transport), [Message("user", "Hello")], timeout=5)
    assert result.text.startswith("Hello!")


async def test_invalid_structured_output_is_retryable_mismatch(fake: FakeOpenAI, transport: str) -> None:
    fake.fail_next(1, "invalid_json_output")
    with pytest.raises(Unavailable) as info:
        await chat(gpt(fake, transport), [Message("user", "review")],
                   response_format=json_schema_format(SCHEMA))
    assert info.value.reason == "OUTPUT_SCHEMA_MISMATCH"
    result = await with_retries(
        lambda: chat(gpt(fake, transport), [Message("user", "review")],
                     response_format=json_schema_format(SCHEMA)), base_delay=0.01)
    jsonschema.validate(result.parsed, SCHEMA)


async def test_structured_output_cut_by_stop_sequences_is_not_retryable(
        fake: FakeOpenAI, transport: str) -> None:
    fake.fail_next(1, "invalid_json_output")
    with pytest.raises(FailedPrecondition) as info:
        await chat(gpt(fake, transport), [Message("user", "review")], stop=[" "],
                   response_format=json_schema_format(SCHEMA))
    assert info.value.reason == "OUTPUT_TRUNCATED" and not is_retryable(info.value)


async def test_unknown_model_is_not_found(fake: FakeOpenAI, transport: str) -> None:
    with pytest.raises(NotFound) as info:
        await chat(specs(fake, transport).get("fake/gone"), [Message("user", "hi")])
    assert info.value.reason == "MODEL_NOT_FOUND"
    assert "does not exist" in info.value.message


async def test_missing_key_is_a_clear_server_error(fake: FakeOpenAI, transport: str) -> None:
    with pytest.raises(Internal) as info:
        await chat(specs(fake, transport).get("fake/gpt-nokey"), [Message("user", "hi")])
    assert info.value.reason == "PROVIDER_KEY_MISSING"
    assert "ROWFORGE_TEST_UNSET_KEY_VAR" in info.value.message
    assert fake.requests == []


@pytest.mark.parametrize(("status", "error", "reason"), [
    (429, ResourceExhausted, "PROVIDER_RATE_LIMITED"),
    (503, Unavailable, "PROVIDER_UNAVAILABLE"),
    ("malformed", Unavailable, "PROVIDER_BAD_RESPONSE"),
])
async def test_embedding_faults(fake: FakeOpenAI, transport: str, status: int | str, error: type,
                                reason: str) -> None:
    fake.fail_next(1, status, retry_after=1)
    with pytest.raises(error) as info:
        await embed(specs(fake, transport).get("fake/embed"), ["x"])
    assert info.value.reason == reason
    assert len(fake.requests) == 1, "no route may retry on its own"


@pytest.mark.parametrize("transport", ["openai", "litellm"])
async def test_connection_refused_is_unavailable(transport: str) -> None:
    async with FakeOpenAI() as server:
        base = server.base_url
    spec = ModelSpec(id="fake/down", route="openai/fake-gpt", api_base=base, api_key_env=KEY_ENV,
                     transport=transport)
    with pytest.raises(Unavailable) as info:
        await chat(spec, [Message("user", "hi")], timeout=5)
    assert info.value.reason == "PROVIDER_UNAVAILABLE"


# --- retries against real HTTP -----------------------------------------------------------

async def test_retries_wait_for_retry_after(fake: FakeOpenAI, transport: str) -> None:
    fake.fail_next(2, 429, retry_after=0.3)
    waits: list[float] = []
    result = await with_retries(lambda: chat(gpt(fake, transport), [Message("user", "Hello")]),
                                base_delay=0.01, on_retry=lambda n, e, d: waits.append(d))
    assert result.text.startswith("Hello!")
    stamps = [r.timestamp for r in fake.requests_to("/v1/chat/completions")]
    assert len(stamps) == 3
    assert all(later - earlier >= 0.3 for earlier, later in itertools.pairwise(stamps))
    assert waits == [0.3, 0.3]


async def test_prompt_rules_fail_specific_requests(fake: FakeOpenAI, transport: str) -> None:
    """The batch-test shape: only the marked request fails, and only N times."""
    ok = chat(gpt(fake, transport), [Message("user", "plain request")])
    flaky = [Message("user", "flaky request [[fault:429x2,retry_after=0.05]]")]
    broken = [Message("user", "always broken [[fault:503]]")]
    assert (await ok).text
    for _ in range(2):
        with pytest.raises(ResourceExhausted) as info:
            await chat(gpt(fake, transport), flaky)
        assert info.value.retry_after == 0.05
    assert (await chat(gpt(fake, transport), flaky)).text
    for _ in range(3):
        with pytest.raises(Unavailable):
            await chat(gpt(fake, transport), broken)
    fake.add_rule("needle", 500, times=1)
    with pytest.raises(Unavailable):
        await chat(gpt(fake, transport), [Message("user", "find the needle")])
    assert (await chat(gpt(fake, transport), [Message("user", "find the needle")])).text


async def test_non_retryable_errors_are_not_retried(fake: FakeOpenAI, transport: str) -> None:
    fake.fail_next(3, 400)
    with pytest.raises(InvalidArgument):
        await with_retries(lambda: chat(gpt(fake, transport), [Message("user", "x")]), base_delay=0.01)
    assert len(fake.requests) == 1


async def test_cancelling_a_stream_closes_the_request(fake: FakeOpenAI, transport: str) -> None:
    fake.token_delay = 0.05
    stream = stream_chat(gpt(fake, transport), [Message("user", "Explain the water cycle in detail.")])
    first = await anext(stream)
    assert first.text
    await stream.aclose()
    for _ in range(100):
        if fake.in_flight == 0:
            break
        await asyncio.sleep(0.02)
    assert fake.in_flight == 0


async def wait_idle(fake: FakeOpenAI) -> None:
    await eventually(lambda: fake.in_flight == 0, what="the upstream request to close")


async def test_cancelling_the_task_mid_stream_closes_the_upstream(fake: FakeOpenAI,
                                                                   transport: str) -> None:
    fake.token_delay = 0.2
    got: list[str] = []

    async def consume() -> None:
        async for chunk in stream_chat(gpt(fake, transport),
                                       [Message("user", "Explain the water cycle in detail.")]):
            got.append(chunk.text)

    task = asyncio.create_task(consume())
    await eventually(lambda: bool(got), what="the first token")
    assert fake.in_flight == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_idle(fake)


async def test_cancelling_a_whole_call_closes_the_upstream(fake: FakeOpenAI,
                                                            transport: str) -> None:
    fake.latency = 5
    task = asyncio.create_task(chat(gpt(fake, transport), [Message("user", "hello")]))
    await eventually(lambda: fake.in_flight > 0, what="the request to arrive")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_idle(fake)


async def test_stream_error_event_and_truncated_stream(fake: FakeOpenAI, transport: str) -> None:
    """A stream that breaks after its first tokens fails the call; nothing hangs."""
    fake.fail_next(1, "malformed")
    with pytest.raises(Unavailable) as info:
        async for _ in stream_chat(gpt(fake, transport),
                                   [Message("user", "Explain the seasons on Earth, please.")]):
            pass
    assert info.value.reason == "PROVIDER_BAD_RESPONSE"
    await wait_idle(fake)


def test_sse_parser_handles_split_events_and_line_ends() -> None:
    from rowforge.server.providers.openai_backend import ProviderStreamError, _SSEParser

    parser = _SSEParser()
    stream = (b': keep-alive comment\r\n\r\ndata: {"a": 1}\r\n\r\nevent: x\ndata: {"b":'
              b' 2}\n\ndata: [DONE]\n\n')
    events = []
    for i in range(len(stream)):  # one byte at a time: every split point
        events += parser.feed(stream[i:i + 1])
    assert events == [{"a": 1}, {"b": 2}, None]
    assert parser.ended("stop") is True
    broken = _SSEParser()
    broken.feed(b'data: {"a"')
    with pytest.raises(ProviderStreamError):
        broken.ended(None)


async def test_http_errors_never_leak_a_connection(openai_fake: FakeOpenAI) -> None:
    """Many failed calls, streamed and whole, then the pool still serves (no connection held)."""
    from rowforge.server.providers import Providers
    from rowforge.server.providers.client import standard_backends

    fake = openai_fake
    providers = Providers(standard_backends(connections=2))
    spec = gpt(fake, "openai")
    fake.fail_next(20, 500)
    for i in range(20):
        with pytest.raises(Unavailable):
            if i % 2:
                await providers.chat(spec, [Message("user", "x")])
            else:
                async for _ in providers.stream_chat(spec, [Message("user", "x")]):
                    pass
    # two connections at most: had any error leaked one, these would wait forever
    async with asyncio.timeout(20):
        results = await asyncio.gather(*(providers.chat(spec, [Message("user", f"hi {i}")])
                                         for i in range(6)))
    assert all(r.text for r in results)
    await providers.aclose()


async def test_the_pool_is_sized_to_the_models_connections(openai_fake: FakeOpenAI) -> None:
    from rowforge.server.providers import Providers

    fake = openai_fake
    fake.latency = 0.2
    spec = specs(fake, "openai").get("fake/gpt")
    limited = ModelSpec(**{**vars(spec), "max_connections": 3})
    providers = Providers()
    await providers.start([limited])
    await asyncio.gather(*(providers.chat(limited, [Message("user", f"hi {i}")])
                           for i in range(9)))
    assert fake.max_in_flight == 3
    await providers.aclose()


def test_stream_usage_cost_and_parse_are_the_same_on_both_routes() -> None:
    """One fake, both routes, the same calls: identical results."""

    async def both() -> list[tuple]:
        out = []
        async with FakeOpenAI(api_key="sk-test-providers") as fake:
            for transport in ("openai", "litellm"):
                spec = ModelSpec(id="openai/gpt-4o-mini", route="openai/gpt-4o-mini",
                                 api_base=fake.base_url, api_key_env=KEY_ENV,
                                 transport=transport)
                chunks = [c async for c in stream_chat(spec, [Message("user", "Hello")])]
                whole = await chat(spec, [Message("user", "A positive review, five stars!")],
                                   response_format=json_schema_format(SCHEMA))
                out.append((chunks, whole))
            await default_providers().aclose()
        return out

    (stream_a, whole_a), (stream_b, whole_b) = asyncio.run(both())
    assert stream_a == stream_b
    assert whole_a == whole_b and whole_a.cost_usd and whole_a.parsed["sentiment"] == "positive"


@pytest.mark.parametrize("transport", ["openai", "litellm"])
def test_thread_mode_serves_another_event_loop(transport: str) -> None:
    server = FakeOpenAI.start_in_thread()
    try:
        spec = ModelSpec(id="fake/gpt", route="openai/fake-gpt", api_base=server.base_url,
                         api_key_env=KEY_ENV, transport=transport)
        server.fail_next(1, 429, retry_after=0.1)
        async def call() -> ChatResult:
            try:
                return await with_retries(lambda: chat(spec, [Message("user", "Hello")]),
                                          base_delay=0.01)
            finally:
                await default_providers().aclose()

        result = asyncio.run(call())
        assert result.text.startswith("Hello!")
        assert len(server.requests) == 2
    finally:
        server.stop()


def test_litellm_is_imported_lazily() -> None:
    """Importing the model layer (and using built-ins) must not pay litellm's import."""
    code = ("import sys, asyncio; from rowforge.server import providers as p;"
            "r = p.ModelRegistry.from_config([]);"
            "asyncio.run(p.chat(r.get('rowforge/chat'), [p.Message('user', 'hi')]));"
            "print('litellm' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout.strip()
    assert out == "False"


def test_litellm_is_configured_offline_and_quiet() -> None:
    litellm = litellm_client.load()
    assert os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] == "True"
    assert litellm.suppress_debug_info is True and litellm.telemetry is False
    assert litellm.callbacks == [] and litellm.success_callback == []
    assert litellm.DEFAULT_MAX_RETRIES == 0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.dictionaries(  # int64: orjson reads bigger integers as floats
    st.text(max_size=5), st.integers(-2**63, 2**63 - 1), max_size=3),
                          st.sampled_from(["plain", "comment", "field", "split"])),
                max_size=8),
       st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=30),
       st.booleans())
def test_sse_parser_fast_path_agrees_with_the_line_parser(
        events: list[tuple[dict[str, int], str]], cuts: list[int], crlf: bool) -> None:
    """Whole ``\\n``-separated events take a fast path; any split, comment, extra field or
    multi-line data must decode exactly as the line-by-line parser does."""
    import json

    from rowforge.server.providers.openai_backend import _SSEParser

    blocks = []
    for payload, shape in events:
        text = json.dumps(payload)
        if shape == "comment":
            blocks.append(f": ping\ndata: {text}")
        elif shape == "field":
            blocks.append(f"event: message\nid: 7\ndata: {text}")
        elif shape == "split":  # a JSON value over two data lines (joined by a newline)
            blocks.append(f"data: {text[:1]}\ndata: {text[1:]}")
        else:
            blocks.append(f"data: {text}")
    stream = ("\n\n".join([*blocks, "data: [DONE]"]) + "\n\n").encode()
    if crlf:
        stream = stream.replace(b"\n", b"\r\n")
    parser, got, at, i = _SSEParser(), [], 0, 0
    while at < len(stream):
        size = cuts[i % len(cuts)]
        got += parser.feed(stream[at:at + size])
        at, i = at + size, i + 1
    assert got == [*(payload for payload, _ in events), None]
