"""Batch jobs against a misbehaving provider: 429s with Retry-After, 5xx, timeouts, malformed
bodies, output that fails the schema, refused requests; and our own rate limit. A real server
calls the fake OpenAI server over HTTP through litellm."""

from __future__ import annotations

import itertools
import json
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from rowforge.v1 import batch_job_service_pb2 as pb
from rowforge.v1 import batch_job_service_pb2_grpc
from tests.conftest import FAKE_KEY_ENV, server_env
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.test_batch_support import (
    check_complete,
    project,
    prompts_of,
    run_job,
    text_request,
)
from tests.support.server import ServerProcess

MAX_ATTEMPTS = 3
SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}},
          "required": ["answer"]}


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI.start_in_thread()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture(scope="module")
def faulty_server(tmp_path_factory: pytest.TempPathFactory, fake: FakeOpenAI
                  ) -> Iterator[ServerProcess]:
    limited = {"id": "fake/limited", "route": "openai/fake-gpt", "api_base": fake.base_url,
               "api_key_env": FAKE_KEY_ENV, "capabilities": ["chat"], "rpm": 300}
    env = server_env(fake, ROWFORGE_BATCH_MAX_ATTEMPTS=str(MAX_ATTEMPTS),
                     ROWFORGE_BATCH_BACKOFF_BASE_S="0.05", ROWFORGE_BATCH_BACKOFF_MAX_S="0.2",
                     ROWFORGE_BATCH_REQUEST_TIMEOUT_S="1.0")
    models = json.loads(env["ROWFORGE_MODELS"])
    env["ROWFORGE_MODELS"] = json.dumps([*models, limited])
    proc = ServerProcess(Path(tmp_path_factory.mktemp("batch-faults")), env=env)
    with proc.start():
        yield proc


@pytest.fixture
async def stub(faulty_server: ServerProcess):  # type: ignore[no-untyped-def]
    async with grpc.aio.insecure_channel(faulty_server.address) as channel:
        yield batch_job_service_pb2_grpc.BatchJobServiceStub(channel)


def calls_by_prompt(fake: FakeOpenAI, tag: str) -> dict[str, list[float]]:
    calls: dict[str, list[float]] = defaultdict(list)
    for text, at in prompts_of(fake):
        if tag in text:
            calls[text].append(at)
    return calls


async def test_every_fault_ends_with_exact_counts(stub, fake: FakeOpenAI) -> None:
    md = project()
    tag = "faults-1"
    cases = {  # request id: (fault marker, schema?, final state, attempts, reason)
        **{f"ok_{i}": ("", False, "ok", 1, "") for i in range(10)},
        "rate_a": ("[[fault:429x2,retry_after=0.4]]", False, "ok", 3, ""),
        "rate_b": ("[[fault:429x2,retry_after=0.4]]", False, "ok", 3, ""),
        "server_once": ("[[fault:500x1]]", False, "ok", 2, ""),
        "down": ("[[fault:503]]", False, "failed", MAX_ATTEMPTS, "PROVIDER_UNAVAILABLE"),
        "slow_once": ("[[fault:timeoutx1]]", False, "ok", 2, ""),
        "garbled_once": ("[[fault:malformedx1]]", False, "ok", 2, ""),
        "bad_json_once": ("[[fault:invalid_json_outputx1]]", True, "ok", 2, ""),
        "bad_json": ("[[fault:invalid_json_output]]", True, "failed", MAX_ATTEMPTS,
                     "OUTPUT_SCHEMA_MISMATCH"),
        "refused": ("[[fault:400]]", False, "failed", 1, "PROVIDER_BAD_REQUEST"),
    }
    requests = [text_request(rid, f"{marker} {tag} {rid}".strip(),
                             **({"output_schema": SCHEMA} if schema else {}))
                for rid, (marker, schema, _, _, _) in cases.items()]
    final, found = await run_job(stub, md, requests, model="fake/gpt")
    check_complete(final, found, list(cases))
    assert final.state == pb.JOB_STATE_SUCCEEDED
    assert final.metrics.successful_requests == 16 and final.metrics.failed_requests == 3
    by_id = {r.request_id: r for r in found}
    calls = calls_by_prompt(fake, tag)
    # every provider call, retries included, and nothing else (issue 10 item 10)
    assert final.metrics.provider_calls == sum(len(v) for v in calls.values()) == sum(
        attempts for _, _, _, attempts, _ in cases.values())
    for rid, (_, schema, state, attempts, reason) in cases.items():
        result = by_id[rid]
        assert result.attempts == attempts, rid
        assert len(next(v for k, v in calls.items() if k.endswith(f"{tag} {rid}"))) == attempts
        if state == "ok":
            assert result.state == pb.REQUEST_STATE_SUCCEEDED, (rid, result.error)
            assert result.response_text
            if schema:
                assert result.response_json.struct_value["answer"]
        else:
            assert result.state == pb.REQUEST_STATE_FAILED, rid
            assert result.error.reason == reason, (rid, result.error)
            assert result.error.message
            assert result.error.retryable == (attempts > 1)
    # no retry came sooner than the provider's Retry-After
    for rid in ("rate_a", "rate_b"):
        times = next(v for k, v in calls.items() if k.endswith(f"{tag} {rid}"))
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert len(gaps) == 2 and min(gaps) >= 0.4, gaps
    # and a request that failed for good tells why on GetRequest too
    reply = await stub.GetRequest(pb.GetRequestRequest(job_id=final.job_id, request_id="down"),
                                  metadata=md)
    assert reply.state == pb.REQUEST_STATE_FAILED and reply.attempts == MAX_ATTEMPTS
    assert reply.last_error.reason == "PROVIDER_UNAVAILABLE"


async def test_a_model_the_provider_does_not_know_fails_every_request_once(stub, fake) -> None:
    md = project()
    final, found = await run_job(stub, md, [text_request(f"u{i}") for i in range(4)],
                                 model="fake/unknown")
    check_complete(final, found, [f"u{i}" for i in range(4)])
    assert final.state == pb.JOB_STATE_FAILED  # every request failed
    assert {(r.state, r.attempts, r.error.reason) for r in found} == \
        {(pb.REQUEST_STATE_FAILED, 1, "MODEL_NOT_FOUND")}


async def test_requests_per_minute_are_held_to_the_model_limit(stub, fake) -> None:
    """rpm 300: a bucket of 50 (10 s worth) refilled at 5 per second, as the *provider* sees
    the calls arrive: over any window of W seconds at most 50 + 5 W arrivals, with no slack.
    The first job to the model also loads litellm (a cold start used to let every grant made
    during the import reach the provider in one burst)."""
    md = project()
    tag = "limited-1"
    n = 60
    final, found = await run_job(stub, md, [text_request(f"l{i}", f"{tag} {i}")
                                            for i in range(n)], model="fake/limited")
    check_complete(final, found, [f"l{i}" for i in range(n)])
    # every provider call counts, retries included (on a loaded machine a call can outlive
    # this server's 1 s request timeout and be retried: the retry waits for the limiter too)
    arrivals = sorted(at for times in calls_by_prompt(fake, tag).values() for at in times)
    assert len(arrivals) >= n
    for i, first in enumerate(arrivals):
        for j in range(i, len(arrivals)):
            window = arrivals[j] - first
            assert j - i + 1 <= 50 + 5 * window + 1e-6, (i, j, window)
    assert arrivals[-1] - arrivals[0] < 30  # held to the limit, not far below it
