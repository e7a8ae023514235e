"""The generation RPCs on a server backed by PostgreSQL (the engine is database-agnostic; the
store's group commit and history reads run on asyncpg here)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest

from rowforge.v1 import table_service_pb2 as pb
from rowforge.v1 import table_service_pb2_grpc
from tests.conftest import server_env
from tests.integration.generation_support import (
    ACTION,
    CHAT,
    DONE,
    PENDING,
    RUNNING,
    SKIPPED,
    add_rows,
    create_table,
    get_row,
    input_col,
    list_rows,
    llm_col,
    md,
    stream_add_rows,
    struct,
)
from tests.support import postgres
from tests.support.server import ServerProcess
from tests.support.waiting import eventually

__all__ = ["md"]  # fixture


@pytest.fixture(scope="module")
def pg_server(tmp_path_factory: pytest.TempPathFactory, fake_openai: object
              ) -> Iterator[ServerProcess]:
    if postgres.postgres_url() is None:
        pytest.skip(postgres.SKIP_REASON)
    url = postgres.create_database()
    proc = ServerProcess(tmp_path_factory.mktemp("pg-server"),
                         env=server_env(fake_openai, ROWFORGE_DATABASE_URL=url))
    try:
        with proc.start():
            yield proc
    finally:
        postgres.drop_database(url)


@pytest.fixture
async def pg_stub(pg_server: ServerProcess
                  ) -> AsyncIterator[table_service_pb2_grpc.TableServiceStub]:
    async with grpc.aio.insecure_channel(pg_server.address) as channel:
        yield table_service_pb2_grpc.TableServiceStub(channel)


async def test_stream_add_rows_and_regen_on_postgresql(pg_stub, md):
    await create_table(pg_stub, md, "t", [input_col("q"), llm_col("a", "Answer ${q}"),
                                          llm_col("b", "Shorten ${a}")])
    messages = await stream_add_rows(pg_stub, md, "t", [{"q": f"question {i}"}
                                                        for i in range(60)])
    assert messages[-1].completed.row_count == 60 and messages[-1].completed.error_count == 0
    listed = await list_rows(pg_stub, md, "t", limit=100)
    assert listed.total == 60
    for row in listed.items:
        assert row.cells["a"].status == DONE and row.cells["b"].status == DONE
    first = listed.items[0].id
    regen = await pg_stub.RegenRows(pb.RegenRowsRequest(
        table_type=ACTION, table_id="t", row_ids=[first],
        regen_strategy=pb.REGEN_STRATEGY_RUN_AFTER, output_column_id="b"), metadata=md)
    assert regen.rows[0].columns["b"].status == DONE
    assert regen.rows[0].columns["a"].status == SKIPPED


async def test_chat_history_on_postgresql(pg_stub, md):
    await create_table(pg_stub, md, "chat", [input_col("User"), llm_col("AI")],
                       table_type=CHAT)
    await add_rows(pg_stub, md, "chat", [{"User": "My name is Alice"}], table_type=CHAT)
    reply = await add_rows(pg_stub, md, "chat", [{"User": "What's my name?"}], table_type=CHAT)
    assert reply.rows[0].columns["AI"].text == "Your name is Alice."


async def test_cancellation_on_postgresql(pg_stub, md, fake_openai):
    marker = uuid.uuid4().hex
    await create_table(pg_stub, md, "t", [
        input_col("q"), llm_col("slow", f"{marker} [[fault:timeout]] ${{q}}", model="fake/gpt")])
    call = pg_stub.StreamAddRows(pb.StreamAddRowsRequest(
        table_type=ACTION, table_id="t", data=[struct({"q": "x"}), struct({"q": "y"})]),
        metadata=md)
    ids = []
    async for message in call:
        if message.WhichOneof("event") == "row_created":
            ids.append(message.row_created.row_id)
        if len(ids) == 2:
            break
    await eventually(lambda: sum(marker in str(r.json) for r in list(
        fake_openai.requests_to("/v1/chat/completions"))) == 2)
    call.cancel()
    await eventually(lambda: fake_openai.in_flight == 0)
    for row_id in ids:
        row = await get_row(pg_stub, md, "t", row_id)
        assert row.cells["slow"].status not in (PENDING, RUNNING)
        assert row.cells["slow"].status == SKIPPED

