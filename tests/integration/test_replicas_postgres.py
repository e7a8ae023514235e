"""Replica liveness on PostgreSQL with two real server processes: while a replica is alive its
work is left alone, however long it takes; once it is SIGKILLed, the other one notices its
lease ran out and finishes its orphaned work: the cells it was generating become ERROR
"interrupted" and the batch requests it had leased are re-queued and answered, long before
their own (batch) leases would have expired."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import grpc
import pytest

from rowforge.v1 import batch_job_service_pb2 as bpb
from rowforge.v1 import batch_job_service_pb2_grpc, table_service_pb2_grpc
from rowforge.v1 import table_service_pb2 as pb
from tests.conftest import replica_server
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.generation_support import (
    ACTION,
    DONE,
    ERROR,
    PENDING,
    RUNNING,
    create_table,
    input_col,
    list_rows,
    llm_col,
    struct,
)
from tests.integration.test_batch_support import (
    add_all,
    check_complete,
    create,
    project,
    results,
    text_request,
)
from tests.support.server import ServerProcess
from tests.support.waiting import eventually

LEASE_S = 2.0
ROWS = 4
REQUESTS = 40
INTERRUPTED = "interrupted: the server stopped before this cell finished"


@pytest.fixture
def fakes() -> Iterator[tuple[FakeOpenAI, FakeOpenAI]]:
    """A provider that never answers in time (for the replica that will die) and a fast one."""
    pair = (FakeOpenAI.start_in_thread(latency=600.0), FakeOpenAI.start_in_thread(latency=0.01))
    try:
        yield pair
    finally:
        for fake in pair:
            fake.stop()


def replica(tmp_path: Path, name: str, fake: FakeOpenAI, database: str) -> ServerProcess:
    # Batch leases far longer than the test: only the replica take-over can re-queue them.
    return replica_server(tmp_path, name, fake, database, ROWFORGE_BATCH_LEASE_S="600",
                          ROWFORGE_REPLICA_LEASE_S=str(LEASE_S))


async def registered(database: str) -> list[str]:
    conn = await asyncpg.connect(database.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        return [r["id"] for r in await conn.fetch("SELECT id FROM rf_replicas ORDER BY id")]
    finally:
        await conn.close()


async def leased_by(database: str, owner: str) -> int:
    conn = await asyncpg.connect(database.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        return int(await conn.fetchval(
            "SELECT count(*) FROM rf_batch_requests WHERE lease_owner = $1", owner))
    finally:
        await conn.close()


async def test_a_killed_replicas_work_is_finished_by_the_live_one(
        tmp_path: Path, shared_database: str, fakes: tuple[FakeOpenAI, FakeOpenAI]) -> None:
    slow, fast = fakes
    md = project()
    a = replica(tmp_path, "replica-a", slow, shared_database)
    b = replica(tmp_path, "replica-b", fast, shared_database)
    try:
        assert await registered(shared_database) == ["replica-a", "replica-b"]
        async with grpc.aio.insecure_channel(a.address) as ca, \
                grpc.aio.insecure_channel(b.address) as cb:
            tables_a = table_service_pb2_grpc.TableServiceStub(ca)
            tables_b = table_service_pb2_grpc.TableServiceStub(cb)
            await create_table(tables_a, md, "t", [
                input_col("q"), llm_col("answer", "Answer ${q}", model="fake/gpt")])
            # Replica A starts generating rows (its provider hangs) ...
            call = tables_a.StreamAddRows(pb.StreamAddRowsRequest(
                table_type=ACTION, table_id="t",
                data=[struct({"q": f"question {i}"}) for i in range(ROWS)]), metadata=md)
            created = 0
            async for message in call:
                created += message.WhichOneof("event") == "row_created"
                if created == ROWS:
                    break
            # ... and leases batch requests (submitted through A, which claims at once; B
            # takes the rest).
            jobs_a = batch_job_service_pb2_grpc.BatchJobServiceStub(ca)
            jobs_b = batch_job_service_pb2_grpc.BatchJobServiceStub(cb)
            job = await create(jobs_a, md, model="fake/gpt")
            ids = [f"r{i}" for i in range(REQUESTS)]
            await add_all(jobs_a, md, job.job_id, [text_request(i) for i in ids])
            await jobs_a.SubmitJob(bpb.SubmitJobRequest(job_id=job.job_id), metadata=md)
            await eventually(lambda: leased_by(shared_database, "replica-a"), what="A holds leases",
                             timeout=30)
            held_by_a = await leased_by(shared_database, "replica-a")

            # Alive for several leases: A's cells and leases are left alone.
            await asyncio.sleep(3 * LEASE_S)
            page = await list_rows(tables_b, md, "t")
            assert {r.cells["answer"].status for r in page.items} <= {PENDING, RUNNING}
            assert await leased_by(shared_database, "replica-a") == held_by_a

            a.kill()  # SIGKILL: A cleans nothing up
            call.cancel()
            killed = time.monotonic()

            async def cells_finished() -> bool:
                rows = (await list_rows(tables_b, md, "t")).items
                return all(r.cells["answer"].status not in (PENDING, RUNNING) for r in rows)

            await eventually(cells_finished, timeout=30, what="A's cells finished")
            rows = (await list_rows(tables_b, md, "t")).items
            assert len(rows) == ROWS
            for row in rows:
                assert row.cells["answer"].status == ERROR
                assert row.cells["answer"].error == INTERRUPTED
            found, final = await results(jobs_b, md, job.job_id, timeout=60)
            taken = time.monotonic() - killed
            check_complete(final, found, ids)
            assert final.state == bpb.JOB_STATE_SUCCEEDED
            # Well before the 600 s batch leases: the take-over re-queued them.
            assert taken < 60
            assert await registered(shared_database) == ["replica-b"]
            # The live replica still generates new cells normally.
            await create_table(tables_b, md, "t2", [
                input_col("q"), llm_col("answer", "Answer ${q}", model="fake/gpt")])
            await tables_b.AddRows(pb.AddRowsRequest(
                table_type=ACTION, table_id="t2", data=[struct({"q": "x"})]), metadata=md)
            rows = (await list_rows(tables_b, md, "t2")).items
            assert [r.cells["answer"].status for r in rows] == [DONE]
    finally:
        a.kill()
        b.terminate()
    took_over = [e for e in b.logs() if e.get("msg") == "took over the work of a dead replica"]
    assert [e.get("replica") for e in took_over] == ["replica-a"]


async def test_a_replica_restarted_with_the_same_id_finishes_its_previous_runs_cells(
        tmp_path: Path, shared_database: str, fakes: tuple[FakeOpenAI, FakeOpenAI]) -> None:
    slow, fast = fakes
    md = project()
    a = replica(tmp_path, "replica-a", slow, shared_database)
    try:
        async with grpc.aio.insecure_channel(a.address) as ca:
            tables = table_service_pb2_grpc.TableServiceStub(ca)
            await create_table(tables, md, "t", [
                input_col("q"), llm_col("answer", "Answer ${q}", model="fake/gpt")])
            call = tables.StreamAddRows(pb.StreamAddRowsRequest(
                table_type=ACTION, table_id="t", data=[struct({"q": "q"})]), metadata=md)
            async for message in call:
                if message.WhichOneof("event") == "row_created":
                    break
            a.kill()
            call.cancel()
    finally:
        a.kill()
    again = replica(tmp_path, "replica-a", fast, shared_database)
    try:
        async with grpc.aio.insecure_channel(again.address) as channel:
            rows = (await list_rows(table_service_pb2_grpc.TableServiceStub(channel), md,
                                    "t")).items
        assert [r.cells["answer"].error for r in rows] == [INTERRUPTED]
        assert await registered(shared_database) == ["replica-a"]
    finally:
        again.terminate()
    assert await registered(shared_database) == []  # unregistered on SIGTERM
