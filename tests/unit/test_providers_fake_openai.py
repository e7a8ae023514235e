"""The fake OpenAI-compatible server itself, spoken to with plain HTTP (httpx)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator

import httpx
import numpy as np
import pytest

from tests.fakes.openai_server import FakeOpenAI


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as server:
        yield server


async def post(fake: FakeOpenAI, path: str, body: dict) -> httpx.Response:
    async with httpx.AsyncClient(base_url=fake.base_url, timeout=5) as client:
        return await client.post(path, json=body)


async def test_models_endpoint(fake: FakeOpenAI) -> None:
    async with httpx.AsyncClient(base_url=fake.base_url) as client:
        body = (await client.get("/models")).json()
    assert body["object"] == "list" and {"id": "fake-gpt", "object": "model", "created": 0,
                                          "owned_by": "fake"} in body["data"]


async def test_sse_stream_shape(fake: FakeOpenAI) -> None:
    response = await post(fake, "/chat/completions", {
        "model": "fake-gpt", "stream": True, "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "Hello"}]})
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [line.removeprefix("data: ") for line in response.text.split("\n\n") if line]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "Hello! How can I help you today?"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 9


async def test_no_usage_chunk_unless_asked(fake: FakeOpenAI) -> None:
    response = await post(fake, "/chat/completions", {
        "model": "fake-gpt", "stream": True, "messages": [{"role": "user", "content": "Hello"}]})
    assert '"usage"' not in response.text


async def test_unknown_model_404_body(fake: FakeOpenAI) -> None:
    for path, body in (("/chat/completions", {"messages": []}), ("/embeddings", {"input": "x"})):
        response = await post(fake, path, {"model": "unknown-thing", **body})
        assert response.status_code == 404
        error = response.json()["error"]
        assert error["code"] == "model_not_found" and error["type"] == "invalid_request_error"
        assert "unknown-thing" in error["message"] and "does not exist" in error["message"]


async def test_bad_bodies_are_400(fake: FakeOpenAI) -> None:
    assert (await post(fake, "/chat/completions", {"model": "m"})).status_code == 400
    assert (await post(fake, "/embeddings", {"model": "m"})).status_code == 400


async def test_embeddings_float_base64_and_dimensions(fake: FakeOpenAI) -> None:
    floats = (await post(fake, "/embeddings", {"model": "e", "input": ["a b", "c"]})).json()
    assert [d["index"] for d in floats["data"]] == [0, 1]
    assert len(floats["data"][0]["embedding"]) == 64
    encoded = (await post(fake, "/embeddings", {"model": "e", "input": "a b",
                                                "encoding_format": "base64",
                                                "dimensions": 8})).json()
    vector = np.frombuffer(base64.b64decode(encoded["data"][0]["embedding"]), dtype="<f4")
    assert vector.shape == (8,) and abs(float(np.linalg.norm(vector)) - 1) < 1e-5


async def test_fault_queue_then_normal_service(fake: FakeOpenAI) -> None:
    fake.fail_next(2, 429, retry_after=2, retry_after_ms=2500)
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    for _ in range(2):
        response = await post(fake, "/chat/completions", body)
        assert response.status_code == 429
        assert response.headers["retry-after"] == "2"
        assert response.headers["retry-after-ms"] == "2500"
    assert (await post(fake, "/chat/completions", body)).status_code == 200
    assert [r.path for r in fake.requests] == ["/v1/chat/completions"] * 3
    assert fake.requests[0].json == body


async def test_malformed_and_invalid_output(fake: FakeOpenAI) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}],
            "response_format": {"type": "json_schema", "json_schema": {
                "name": "r", "schema": {"type": "object", "required": ["a"],
                                        "properties": {"a": {"type": "integer"}}}}}}
    fake.fail_next(1, "malformed")
    broken = await post(fake, "/chat/completions", body)
    with pytest.raises(json.JSONDecodeError):
        json.loads(broken.text)
    good = (await post(fake, "/chat/completions", body)).json()
    assert isinstance(json.loads(good["choices"][0]["message"]["content"])["a"], int)
    fake.fail_next(1, "invalid_json_output")
    bad = (await post(fake, "/chat/completions", body)).json()
    assert not isinstance(json.loads(bad["choices"][0]["message"]["content"]), dict)


async def test_timeout_fault_hangs_until_the_client_gives_up(fake: FakeOpenAI) -> None:
    fake.fail_next(1, "timeout", hang=30)
    async with httpx.AsyncClient(base_url=fake.base_url, timeout=0.3) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.post("/chat/completions", json={"model": "m", "messages": []})


async def test_api_key_is_checked_when_configured() -> None:
    async with FakeOpenAI(api_key="sk-right") as fake, \
            httpx.AsyncClient(base_url=fake.base_url) as client:
        wrong = await client.post("/embeddings", json={"model": "m", "input": "x"},
                                  headers={"Authorization": "Bearer sk-wrong"})
        right = await client.post("/embeddings", json={"model": "m", "input": "x"},
                                  headers={"Authorization": "Bearer sk-right"})
    assert wrong.status_code == 401 and right.status_code == 200


def test_unknown_fault_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        FakeOpenAI().fail_next(1, "explode")


def test_thread_mode_serves_a_subprocess() -> None:
    """The shape the server tests use: the code under test runs in another process."""
    fake = FakeOpenAI.start_in_thread()
    try:
        fake.fail_next(1, 503)
        code = ("import httpx, sys; b = sys.argv[1];"
                "c = [httpx.post(b + '/chat/completions', json={'model': 'm', 'messages': "
                "[{'role': 'user', 'content': 'Hello'}]}).status_code for _ in range(2)];"
                "print(c)")
        out = subprocess.run([sys.executable, "-c", code, fake.base_url], capture_output=True,
                             text=True, timeout=60, check=True,
                             env={**os.environ, "NO_PROXY": "127.0.0.1"}).stdout
        assert out.strip() == "[503, 200]"
        assert len(fake.requests) == 2
    finally:
        fake.stop()
