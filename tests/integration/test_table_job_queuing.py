"""A table job over all rows starts with its first chunk of rows and queues the rest in the
background (server/tables/job_queue.py): a server stopped mid-queuing continues after a
restart without queuing or generating a row twice, and a cancel mid-queuing stops it.

The servers run in this process so the test can hold the queuing at a chosen chunk."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from rowforge.clients.batch_jobs import job_py
from rowforge.server.app import App, Server
from rowforge.server.batch.api import BatchService
from rowforge.server.config import load_settings
from rowforge.server.tables.job_queue import FIRST_CHUNK
from rowforge.v1 import batch_job_service_pb2 as bpb
from rowforge.v1 import batch_job_service_pb2_grpc, table_service_pb2_grpc
from rowforge.v1 import table_service_pb2 as pb
from tests.integration.generation_support import ACTION, input_col, llm_col, struct

MD = (("x-project-id", "queuing"),)
CHUNK = 100
PASSED = 2  # background chunks let through before the queuing is held
N = FIRST_CHUNK + CHUNK * PASSED + 250
HELD_AT = FIRST_CHUNK + CHUNK * PASSED


class HeldQueuing:
    """Wraps ``BatchStore.queue_requests``: lets the first chunk and ``passes`` background
    chunks through, then holds the next until :attr:`release` is set."""

    def __init__(self, batch: BatchService, passes: int) -> None:
        self.inner = batch.store.queue_requests
        self.passes = passes
        self.held = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, *args: Any, **kw: Any) -> bool:
        if kw.get("after") is not None:
            if self.passes == 0:
                self.held.set()
                await self.release.wait()
            else:
                self.passes -= 1
        result: bool = await self.inner(*args, **kw)
        return result


async def serving(data_dir: Path) -> Server:
    server = Server(App(load_settings(None, data_dir=data_dir, port=0, batch_workers=16)))
    await server.start()
    server.app.table_jobs.queuer.chunk = CHUNK
    return server


class Client:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.t = table_service_pb2_grpc.TableServiceStub(channel)
        self.b = batch_job_service_pb2_grpc.BatchJobServiceStub(channel)

    async def job(self, job_id: str) -> bpb.Job:
        return (await self.b.GetJob(bpb.GetJobRequest(job_id=job_id), metadata=MD)).job

    async def wait_for(self, job_id: str, done: Any, timeout: float = 60.0) -> bpb.Job:
        deadline = time.monotonic() + timeout
        while True:
            job = await self.job(job_id)
            if done(job):
                return job
            assert time.monotonic() < deadline, job
            await asyncio.sleep(0.05)

    async def written(self) -> list[str]:
        """Ids of the rows whose ``a`` holds a value, in insertion order of all rows."""
        out, token = [], ""
        while True:
            reply = await self.t.ListRows(pb.ListRowsRequest(
                table_type=ACTION, table_id="t", limit=100, page_token=token), metadata=MD)
            out += [r.id for r in reply.items if r.cells["a"].value.string_value]
            token = reply.next_page_token
            if not token:
                return out


@pytest.fixture
async def first(tmp_path: Path) -> AsyncIterator[tuple[Server, Client, HeldQueuing, str]]:
    """A server whose job over N rows is held after HELD_AT rows were queued and
    generated."""
    server = await serving(tmp_path)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            c = Client(channel)
            await c.t.CreateTable(pb.CreateTableRequest(
                table_type=ACTION, table_id="t", cols=[input_col("q")]), metadata=MD)
            for start in range(0, N, 100):
                await c.t.AddRows(pb.AddRowsRequest(table_type=ACTION, table_id="t", data=[
                    struct({"q": f"q{i}"}) for i in range(start, min(N, start + 100))]),
                    metadata=MD)
            await c.t.AddColumns(pb.AddColumnsRequest(
                table_type=ACTION, table_id="t", cols=[llm_col("a", "answer ${q}")]),
                metadata=MD)
            held = HeldQueuing(server.app.batch, PASSED)
            server.app.batch.store.queue_requests = held  # type: ignore[method-assign]
            job = (await c.t.CreateTableJob(pb.CreateTableJobRequest(
                table_type=ACTION, table_id="t", all_rows=True,
                regen_strategy=pb.REGEN_STRATEGY_RUN_SELECTED, output_column_id="a",
                only_missing=True), metadata=MD)).job
            assert job.queuing and job.metrics.total_requests == FIRST_CHUNK
            assert job_py(job).queuing  # the Python client's Job says so too
            await asyncio.wait_for(held.held.wait(), 30)
            got = await c.wait_for(job.job_id,
                                   lambda j: j.metrics.processed_requests >= HELD_AT)
            # every queued row is done, but rows are left to queue: the job goes on
            assert got.state == bpb.JOB_STATE_PROCESSING and got.queuing
            assert got.metrics.total_requests == HELD_AT
            yield server, c, held, job.job_id
    finally:
        await server.stop(grace=1)


async def test_a_restart_mid_queuing_continues_without_queuing_a_row_twice(
        tmp_path: Path, first: tuple[Server, Client, HeldQueuing, str]) -> None:
    server, _, _, job_id = first
    await server.stop(grace=1)  # the held chunk was never written
    second = await serving(tmp_path)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{second.port}") as channel:
            c = Client(channel)
            final = await c.wait_for(job_id, lambda j: j.state == bpb.JOB_STATE_SUCCEEDED)
            assert not final.queuing
            assert final.metrics.total_requests == final.metrics.successful_requests == N
            assert final.metrics.provider_calls == N  # no row generated twice
            assert len(await c.written()) == N
    finally:
        await second.stop(grace=1)


async def test_cancel_mid_queuing_stops_it(
        first: tuple[Server, Client, HeldQueuing, str]) -> None:
    server, c, held, job_id = first
    cancelled = (await c.b.CancelJob(bpb.CancelJobRequest(job_id=job_id), metadata=MD)).job
    assert cancelled.state == bpb.JOB_STATE_CANCELLED and not cancelled.queuing
    held.release.set()  # the held chunk now finds the job cancelled
    deadline = time.monotonic() + 10
    while server.app.table_jobs.queuer.queuing:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    final = await c.job(job_id)
    assert final.metrics.total_requests == HELD_AT and final.metrics.provider_calls == HELD_AT
    written = await c.written()
    assert len(written) == HELD_AT  # the rows never queued stay as they were
