"""A server killed in the middle of StreamAddRows: after a restart on the same data, no cell
is left PENDING or RUNNING (real server subprocesses, SQLite, a slow fake model)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from rowforge.v1 import table_service_pb2 as pb
from rowforge.v1 import table_service_pb2_grpc
from tests.conftest import server_env
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.generation_support import (
    ACTION,
    DONE,
    ERROR,
    PENDING,
    RUNNING,
    create_table,
    get_row,
    input_col,
    list_rows,
    llm_col,
    struct,
)
from tests.support.server import ServerProcess

MD = (("x-project-id", "recovery"),)


@pytest.fixture
def slow_fake() -> Iterator[FakeOpenAI]:
    """A fake provider that takes a minute to answer: the kill always lands mid-call."""
    fake = FakeOpenAI.start_in_thread(latency=60.0)
    try:
        yield fake
    finally:
        fake.stop()


async def test_cells_interrupted_by_a_kill_are_errors_after_restart(
        tmp_path: Path, slow_fake: FakeOpenAI) -> None:
    env = server_env(slow_fake)
    first = ServerProcess(tmp_path, env=env).start()
    try:
        async with grpc.aio.insecure_channel(first.address) as channel:
            stub = table_service_pb2_grpc.TableServiceStub(channel)
            await create_table(stub, MD, "t", [
                input_col("q"), llm_col("fast", "Answer ${q}", model="rowforge/chat"),
                llm_col("slow", "Think about ${q}", model="fake/gpt")])
            call = stub.StreamAddRows(pb.StreamAddRowsRequest(
                table_type=ACTION, table_id="t", data=[struct({"q": f"question {i}"}) for i in range(3)]),
                metadata=MD)
            created: list[str] = []
            fast_done: set[str] = set()
            async for message in call:
                kind = message.WhichOneof("event")
                if kind == "row_created":
                    created.append(message.row_created.row_id)
                elif kind == "cell_completed" and message.cell_completed.output_column_name \
                        == "fast":
                    fast_done.add(message.cell_completed.row_id)
                if len(fast_done) == 3:
                    break  # the slow cells are waiting for the provider
            for _ in range(500):  # the three slow calls reach the provider
                if len(slow_fake.requests_to("/v1/chat/completions")) == 3:
                    break
                await asyncio.sleep(0.02)
            else:
                pytest.fail("the slow model calls never started")
            first.kill()  # SIGKILL: no shutdown hook runs
            call.cancel()
    finally:
        first.kill()

    second = ServerProcess(tmp_path, env=env).start()
    try:
        async with grpc.aio.insecure_channel(second.address) as channel:
            stub = table_service_pb2_grpc.TableServiceStub(channel)
            for row_id in created:
                row = await get_row(stub, MD, "t", row_id)
                assert row.cells["q"].value.string_value.startswith("question")
                assert row.cells["fast"].status == DONE
                assert row.cells["slow"].status == ERROR
                assert row.cells["slow"].error == ("interrupted: the server stopped before this "
                                                   "cell finished")
            page = await list_rows(stub, MD, "t")
            assert page.total == 3
            statuses = {c.status for r in page.items for c in r.cells.values()}
            assert not statuses & {PENDING, RUNNING}
    finally:
        second.terminate()

