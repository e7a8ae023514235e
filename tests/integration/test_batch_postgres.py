"""Batch jobs on PostgreSQL with two server processes on one database: they share a job's
work without calling the model twice for a request, and when one is SIGKILLed the other
finishes the job. Each replica calls its own fake provider, so the calls can be told apart."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from rowforge.v1 import batch_job_service_pb2 as pb
from rowforge.v1 import batch_job_service_pb2_grpc
from tests.conftest import replica_server
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.test_batch_support import (
    add_all,
    check_complete,
    create,
    get_job,
    project,
    prompts_of,
    results,
    text_request,
)
from tests.support.server import ServerProcess
from tests.support.waiting import eventually

N = 300


@pytest.fixture
def fakes() -> Iterator[tuple[FakeOpenAI, FakeOpenAI]]:
    pair = (FakeOpenAI.start_in_thread(latency=0.05), FakeOpenAI.start_in_thread(latency=0.05))
    try:
        yield pair
    finally:
        for fake in pair:
            fake.stop()


def replica(tmp_path: Path, name: str, fake: FakeOpenAI, database: str, lease_s: float
            ) -> ServerProcess:
    return replica_server(tmp_path, name, fake, database, ROWFORGE_BATCH_LEASE_S=str(lease_s))


def calls(*fakes: FakeOpenAI) -> Counter[str]:
    return Counter(text for fake in fakes for text, _ in prompts_of(fake))


async def _submit_job(address: str, md, ids: list[str]) -> str:  # type: ignore[no-untyped-def]
    async with grpc.aio.insecure_channel(address) as channel:
        stub = batch_job_service_pb2_grpc.BatchJobServiceStub(channel)
        job = await create(stub, md, model="fake/gpt")
        await add_all(stub, md, job.job_id, [text_request(i, f"shared {i}") for i in ids])
        await stub.SubmitJob(pb.SubmitJobRequest(job_id=job.job_id), metadata=md)
        return job.job_id


async def test_two_replicas_share_a_job_and_call_each_request_once(
        tmp_path: Path, shared_database: str, fakes: tuple[FakeOpenAI, FakeOpenAI]) -> None:
    md = project()
    ids = [f"p{i}" for i in range(N)]
    a = replica(tmp_path, "replica-a", fakes[0], shared_database, lease_s=10)
    b = replica(tmp_path, "replica-b", fakes[1], shared_database, lease_s=10)
    try:
        job_id = await _submit_job(a.address, md, ids)
        async with grpc.aio.insecure_channel(b.address) as channel:  # read from the other
            stub = batch_job_service_pb2_grpc.BatchJobServiceStub(channel)
            found, final = await results(stub, md, job_id)
        check_complete(final, found, ids)
        assert final.state == pb.JOB_STATE_SUCCEEDED
    finally:
        a.terminate()
        b.terminate()
    by_a, by_b = calls(fakes[0]), calls(fakes[1])
    assert sum(by_a.values()) > 0 and sum(by_b.values()) > 0  # both did some of the work
    both = by_a + by_b
    assert set(both) == {f"shared {i}" for i in ids}
    assert set(both.values()) == {1}  # and no request was sent twice
    assert all(r.attempts == 1 for r in found)


async def test_killing_one_replica_leaves_the_other_to_finish(
        tmp_path: Path, shared_database: str, fakes: tuple[FakeOpenAI, FakeOpenAI]) -> None:
    md = project()
    ids = [f"q{i}" for i in range(N)]
    a = replica(tmp_path, "replica-a", fakes[0], shared_database, lease_s=2)
    b = replica(tmp_path, "replica-b", fakes[1], shared_database, lease_s=2)
    try:
        job_id = await _submit_job(a.address, md, ids)
        async with grpc.aio.insecure_channel(b.address) as channel:
            stub = batch_job_service_pb2_grpc.BatchJobServiceStub(channel)

            async def a_worked_enough() -> bool:
                job = await get_job(stub, md, job_id)
                return job.metrics.successful_requests >= 60 and sum(calls(fakes[0]).values()) > 0

            await eventually(a_worked_enough)
            a.kill()
            found, final = await results(stub, md, job_id)
        check_complete(final, found, ids)
        assert final.state == pb.JOB_STATE_SUCCEEDED
    finally:
        a.kill()
        b.terminate()
    both = calls(*fakes)
    assert set(both) == {f"shared {i}" for i in ids}
    # only what the killed replica held (2 x 8 workers) could have been sent twice
    assert sum(both.values()) - N <= 16
