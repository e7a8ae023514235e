"""A server SIGKILLed in the middle of a batch job, restarted on the same data directory:
the job completes, every request has exactly one result, and a reader resuming from its
cursor misses nothing and sees nothing twice."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from rowforge.v1 import batch_job_service_pb2 as pb
from rowforge.v1 import batch_job_service_pb2_grpc
from tests.conftest import server_env
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.test_batch_support import (
    add_all,
    check_complete,
    create,
    project,
    prompts_of,
    results,
    text_request,
)
from tests.support.server import ServerProcess

N = 200


@pytest.fixture
def slow_fake() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI.start_in_thread(latency=0.05)
    try:
        yield fake
    finally:
        fake.stop()


async def test_sigkill_mid_job_then_restart_completes_exactly_once(
        tmp_path: Path, slow_fake: FakeOpenAI) -> None:
    env = server_env(slow_fake, ROWFORGE_BATCH_LEASE_S="2", ROWFORGE_BATCH_WORKERS="8")
    md = project()
    ids = [f"k{i}" for i in range(N)]
    first = ServerProcess(tmp_path, env=env).start()
    try:
        async with grpc.aio.insecure_channel(first.address) as channel:
            stub = batch_job_service_pb2_grpc.BatchJobServiceStub(channel)
            job = await create(stub, md, model="fake/gpt")
            await add_all(stub, md, job.job_id, [text_request(i, f"resume {i}") for i in ids])
            await stub.SubmitJob(pb.SubmitJobRequest(job_id=job.job_id), metadata=md)
            seen: list[pb.BatchResult] = []
            async for message in stub.StreamResults(pb.StreamResultsRequest(job_id=job.job_id),
                                                    metadata=md, timeout=60):
                seen.append(message.result)
                if len(seen) == 60:
                    break
            first.kill()  # SIGKILL: no shutdown, leases left behind
    finally:
        first.kill()
    assert first.process is not None and first.process.returncode == -9

    second = ServerProcess(tmp_path, env=env).start()
    try:
        async with grpc.aio.insecure_channel(second.address) as channel:
            stub = batch_job_service_pb2_grpc.BatchJobServiceStub(channel)
            rest, final = await results(stub, md, job.job_id, cursor=seen[-1].sequence)
            check_complete(final, seen + rest, ids)
            assert final.state == pb.JOB_STATE_SUCCEEDED
            everything, again = await results(stub, md, job.job_id)
            check_complete(again, everything, ids)
            assert [r.request_id for r in everything[:60]] == [r.request_id for r in seen]
    finally:
        second.terminate()
    calls = Counter(text for text, _ in prompts_of(slow_fake))
    assert set(calls) == {f"resume {i}" for i in ids}
    # Only calls the kill could lose are made again: those in flight (8 workers) and those
    # finished but not yet recorded (the recorder flushes at 4 = workers / 2 outcomes or
    # after 50 ms). The other requests the server had leased (it claims 2 x workers) were
    # never sent, so they cost nothing when they are claimed again. 8 resends seen.
    assert sum(calls.values()) - N <= 8 + 4
    # the job reports its paid calls: counted before each call is made, so a call the kill
    # lost still counts; a kill can also catch calls counted but not yet sent (counted while
    # waiting for one of the 8 call slots: at most the 16 leased requests)
    sent = sum(calls.values())
    assert sent <= again.metrics.provider_calls <= sent + 16, (again.metrics.provider_calls, sent)
    retried = {r.request_id for r in everything if r.attempts > 1}
    assert {f"resume {rid}" for rid in retried} >= {t for t, c in calls.items() if c > 1}
