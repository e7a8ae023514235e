"""Table jobs on PostgreSQL shared by two replicas: both generate rows of one job (leases
with SKIP LOCKED), every cell is generated once; one replica SIGKILLed mid-job, the other
finishes its rows after their leases expire."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from rowforge.v1 import batch_job_service_pb2 as bpb
from tests.conftest import replica_server
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.generation_support import DONE
from tests.integration.test_batch_support import prompts_of
from tests.integration.test_table_jobs import Metadata, Stubs, two_cols
from tests.support.server import ServerProcess


@pytest.fixture
def fakes() -> Iterator[tuple[FakeOpenAI, FakeOpenAI]]:
    pair = (FakeOpenAI.start_in_thread(latency=0.03), FakeOpenAI.start_in_thread(latency=0.03))
    try:
        yield pair
    finally:
        for fake in pair:
            fake.stop()


def replica(tmp_path: Path, name: str, fake: FakeOpenAI, database: str) -> ServerProcess:
    return replica_server(tmp_path, name, fake, database, ROWFORGE_BATCH_LEASE_S="2")


def counts(tag: str, *fakes: FakeOpenAI) -> Counter[str]:
    return Counter(t for fake in fakes for t, _ in prompts_of(fake) if tag in t)


async def test_two_replicas_share_a_table_job_and_survive_a_sigkill(
        tmp_path: Path, shared_database: str, fakes: tuple[FakeOpenAI, FakeOpenAI]) -> None:
    md: Metadata = (("x-project-id", "pg-tj"),)
    tag = uuid.uuid4().hex[:6]
    n = 600
    a = replica(tmp_path, "a", fakes[0], shared_database)
    b = replica(tmp_path, "b", fakes[1], shared_database)
    try:
        async with grpc.aio.insecure_channel(a.address) as ch:
            s = Stubs(ch, md)
            ids = await s.table("pg", n, cols=two_cols(), tag=tag)
            job = await s.job("pg", all_rows=True)
            while True:
                got = (await s.b.GetJob(bpb.GetJobRequest(job_id=job.job_id),
                                        metadata=md)).job
                # b finds the job at its next poll (the submit woke only a): kill it once
                # it has generated rows too
                if got.metrics.processed_requests >= n * 0.3 and counts(tag, fakes[1]):
                    break
                await asyncio.sleep(0.02)
            b.kill()  # SIGKILL: its leases expire and replica a takes its rows
            final, _ = await s.watch(job.job_id)
            assert final.state == bpb.JOB_STATE_SUCCEEDED
            assert final.metrics.successful_requests == n
            rows = await s.rows("pg")
            assert all(rows[r].cells["b"].status == DONE for r in ids)
    finally:
        b.kill()
        a.terminate()
    on_a, on_b = counts(tag, fakes[0]), counts(tag, fakes[1])
    assert on_a and on_b  # both replicas generated rows
    both = on_a + on_b
    assert len([p for p in both if p.startswith("answer ")]) == n
    # only calls in flight on b when it was killed (8 workers), or answered but whose cell
    # was not committed yet, are sent again
    assert sum(both.values()) - 2 * n <= 16, both.most_common(5)
