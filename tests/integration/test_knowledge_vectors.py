"""Embedding vectors of knowledge tables over real servers: a vector of the wrong length, NaN
or infinite is refused (INVALID_ARGUMENT naming the column, nothing written) by AddRows,
StreamAddRows, UpdateRows and ImportRows; right-length vectors are stored as given; and a
server restarted with the table's embedding model reconfigured to another vector size reports
it at start-up and refuses to embed into that table (FAILED_PRECONDITION naming the fix)
instead of mixing sizes, until the configuration is restored."""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from rowforge.v1 import knowledge_service_pb2 as kpb
from rowforge.v1 import table_service_pb2 as tpb
from tests.conftest import FAKE_KEY_ENV
from tests.integration.test_knowledge_service import (
    KNOWLEDGE,
    Client,
    channel,
    client,
    kserver,
    md,
    struct,
)
from tests.support.server import ServerProcess
from tests.support.status import fails

__all__ = ["channel", "client", "kserver", "md"]  # fixtures shared with the knowledge tests

DIM = 384  # rowforge/embed


async def count(client: Client) -> int:
    return len(await client.rows())


async def stored_vector(client: Client, row_id: str, column: str = "Text Embed") -> list[float]:
    [row] = [r for r in await client.rows(columns=[column]) if r["ID"] == row_id]
    return row[column]


def vector(seed: int, n: int = DIM) -> list[float]:
    v = np.random.default_rng(seed).standard_normal(n).astype(np.float32)
    return (v / np.linalg.norm(v)).tolist()


@pytest.mark.parametrize(("value", "expected"), [
    ([0.5, 0.25, 0.125], f"expected {DIM} numbers"),
    ([0.1] * (DIM + 1), f"expected {DIM} numbers"),
    ([float("nan")] * DIM, "finite"),
    ([0.0] * (DIM - 1) + [math.inf], "finite"),
    ([1e39] * DIM, "finite"),
    ([], "non-empty"),
    ("0.1, 0.2", "list of numbers"),
])
async def test_bad_vectors_are_refused_by_add_rows_and_nothing_is_written(
        client: Client, value: Any, expected: str) -> None:
    table = await client.create()
    embed = {c.id: c for c in table.cols}["Text Embed"]
    assert embed.gen_config.embed.dimension == DIM
    for add in (
        lambda rows: client.tables.AddRows(tpb.AddRowsRequest(
            table_type=KNOWLEDGE, table_id="kb", data=[struct(r) for r in rows]),
            metadata=client.md),
        lambda rows: client.tables.StreamAddRows(tpb.StreamAddRowsRequest(
            table_type=KNOWLEDGE, table_id="kb", data=[struct(r) for r in rows]),
            metadata=client.md),
    ):
        rows = [{"Title": "fine", "Text": "a good row"},
                {"Title": "bad", "Text": "its vector is wrong", "Text Embed": value}]
        _, _, fields = await fails(add(rows), grpc.StatusCode.INVALID_ARGUMENT)
        assert list(fields) == ["data[1].Text Embed"], fields
        assert "'Text Embed'" in fields["data[1].Text Embed"]
        assert expected in fields["data[1].Text Embed"]
        assert await count(client) == 0


async def test_update_rows_checks_vectors_and_keeps_a_given_one(client: Client) -> None:
    await client.create()
    [row_id] = await client.add([{"Title": "Tides", "Text": "The moon pulls the seas."}])
    before = await stored_vector(client, row_id)
    assert len(before) == DIM
    for bad in ([0.1, 0.2], [float("inf")] * DIM):
        _, _, fields = await fails(client.tables.UpdateRows(tpb.UpdateRowsRequest(
            table_type=KNOWLEDGE, table_id="kb",
            data={row_id: struct({"Text": "changed", "Text Embed": bad})}),
            metadata=client.md), grpc.StatusCode.INVALID_ARGUMENT)
        assert list(fields) == [f"data[{row_id}].Text Embed"]
    [row] = await client.rows(columns=["Text", "Text Embed"])
    assert row["Text"] == "The moon pulls the seas." and row["Text Embed"] == before

    # A right-length vector is stored as given, even with a new Text (not re-embedded).
    mine = vector(1)
    await client.tables.UpdateRows(tpb.UpdateRowsRequest(
        table_type=KNOWLEDGE, table_id="kb",
        data={row_id: struct({"Text": "Volcanoes erupt lava.", "Text Embed": mine})}),
        metadata=client.md)
    assert np.allclose(await stored_vector(client, row_id), mine, atol=1e-6)
    # ... and a new Text alone is re-embedded as before.
    await client.tables.UpdateRows(tpb.UpdateRowsRequest(
        table_type=KNOWLEDGE, table_id="kb", data={row_id: struct({"Text": "Bees and honey."})}),
        metadata=client.md)
    assert np.allclose(await stored_vector(client, row_id),
                       (await client.embed(["Bees and honey."]))[0], atol=1e-6)


async def test_given_vectors_are_stored_and_searched(client: Client) -> None:
    await client.create()
    mine = vector(7)
    [row_id] = await client.add([{"Title": "Custom", "Text": "zebra crossing stripes",
                                  "Text Embed": mine, "Title Embed": mine}])
    assert np.allclose(await stored_vector(client, row_id), mine, atol=1e-6)
    reply = await client.search("zebra crossing stripes", k=1)
    assert reply.items[0].row.id == row_id


async def import_rows(client: Client, csv: str) -> tpb.ImportRowsResponse:
    async def parts() -> AsyncIterator[tpb.ImportRowsRequest]:
        yield tpb.ImportRowsRequest(metadata=tpb.ImportRowsMetadata(
            table_type=KNOWLEDGE, table_id="kb"))
        yield tpb.ImportRowsRequest(chunk=csv.encode())

    return await client.tables.ImportRows(parts(), metadata=client.md)


async def test_import_rows_takes_json_vectors_of_the_right_length_only(client: Client) -> None:
    await client.create()

    def line(title: str, v: Any) -> str:
        return f'{title},"{json.dumps(v)}"\n'

    for bad in ([0.1, 0.2], "[0.1, NaN]", "not a vector"):
        text = line("bad", bad) if not isinstance(bad, str) else f'bad,"{bad}"\n'
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await import_rows(client, "Title,Text Embed\n" + line("ok", vector(1)) + text)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "Text Embed" in (err.value.details() or "")
        assert await count(client) == 0
    mine = vector(2)
    reply = await import_rows(client, "Title,Text,Text Embed\n" + f'ok,"some text","{mine}"\n')
    assert reply.row_count == 1 and reply.error_count == 0
    [row] = await client.rows(columns=["Text Embed"])
    assert np.allclose(row["Text Embed"], mine, atol=1e-6)


# -- an embedding model reconfigured to another vector size --------------------------------

def env_with(embed_base: str, size: int) -> dict[str, str]:
    models = [{"id": "ellm/embed", "route": "openai/fake-embed", "api_base": embed_base,
               "api_key_env": FAKE_KEY_ENV, "capabilities": ["embed"], "embedding_size": size}]
    return {"ROWFORGE_MODELS": json.dumps(models), FAKE_KEY_ENV: "sk-fake"}


async def connect(proc: ServerProcess) -> AsyncIterator[Client]:
    async with grpc.aio.insecure_channel(proc.address) as ch:
        yield Client(ch, (("x-project-id", "dims"),))


def changed_errors(proc: ServerProcess) -> list[dict[str, Any]]:
    return [e for e in proc.logs() if e.get("level") == "error"
            and e.get("reason") == "EMBEDDING_MODEL_CHANGED"]


@pytest.fixture
def fake_openai_32() -> Any:
    """A second fake provider whose embeddings have 32 numbers."""
    from tests.fakes.openai_server import FakeOpenAI

    fake = FakeOpenAI.start_in_thread(embedding_size=32)
    try:
        yield fake
    finally:
        fake.stop()


async def test_a_reconfigured_embedding_size_is_reported_at_start_and_refused(
        tmp_path: Path, fake_openai: Any, fake_openai_32: Any) -> None:
    with ServerProcess(tmp_path, env=env_with(fake_openai.base_url, 64)).start() as first:
        async for c in connect(first):
            await c.tables.CreateTable(tpb.CreateTableRequest(
                table_type=KNOWLEDGE, table_id="kb", embedding_model="ellm/embed"),
                metadata=c.md)
            ids = await c.add([{"Title": "Tides", "Text": "The moon pulls the seas."},
                               {"Title": "Bees", "Text": "Bees make honey."}])
            assert (await c.search("moon and seas")).items[0].row.id == ids[0]
            uri = await c.upload("notes.txt", b"Volcanoes erupt lava and ash.")
    assert changed_errors(first) == []

    # The same model id now answers with 32-number vectors.
    with ServerProcess(tmp_path, env=env_with(fake_openai_32.base_url, 32)).start() as second:
        [report] = changed_errors(second)
        assert report["table"] == "kb" and report["model"] == "ellm/embed"
        assert (report["tableDimension"], report["modelDimension"]) == ("64", "32")
        assert "embedding_size = 64" in report["msg"]
        async for c in connect(second):
            fake_openai_32.reset()
            reason, meta, _ = await fails(c.search("moon and seas"),
                                          grpc.StatusCode.FAILED_PRECONDITION)
            assert reason == "EMBEDDING_MODEL_CHANGED" and meta["column"] in (
                "Title Embed", "Text Embed")
            reason, _, _ = await fails(c.embed_file(uri), grpc.StatusCode.FAILED_PRECONDITION)
            assert reason == "EMBEDDING_MODEL_CHANGED"
            # New rows: their embedding cells fail, nothing of the wrong length is written.
            reply = await c.tables.AddRows(tpb.AddRowsRequest(
                table_type=KNOWLEDGE, table_id="kb",
                data=[struct({"Title": "Coffee", "Text": "Roasted beans."})]), metadata=c.md)
            cell = reply.rows[0].columns["Text Embed"]
            assert cell.status == tpb.CELL_STATUS_ERROR and "embedding_size = 64" in cell.error
            assert fake_openai_32.requests_to("/v1/embeddings") == []
            # Vectors of the recorded length are still accepted; 32 are not.
            await c.add([{"Title": "Given", "Text": "given vectors",
                          "Text Embed": vector(3, 64), "Title Embed": vector(4, 64)}])
            await fails(c.tables.AddRows(tpb.AddRowsRequest(
                table_type=KNOWLEDGE, table_id="kb", data=[struct(
                    {"Title": "x", "Text Embed": vector(5, 32)})]), metadata=c.md),
                grpc.StatusCode.INVALID_ARGUMENT)
            # A table created now records 32 and works.
            fresh = await c.tables.CreateTable(tpb.CreateTableRequest(
                table_type=KNOWLEDGE, table_id="kb2", embedding_model="ellm/embed"),
                metadata=c.md)
            assert {col.id: col for col in fresh.table.cols}[
                "Text Embed"].gen_config.embed.dimension == 32
            await c.add([{"Title": "Bees", "Text": "Bees make honey."}], table_id="kb2")
            assert len((await c.search("honey", table_id="kb2")).items) == 1

    # Configuration restored: kb is whole again; now kb2 (32) is the one reported.
    with ServerProcess(tmp_path, env=env_with(fake_openai.base_url, 64)).start() as third:
        assert [e["table"] for e in changed_errors(third)] == ["kb2"]
        async for c in connect(third):
            assert (await c.search("moon and seas")).items[0].row.id == ids[0]
            assert len(await c.rows()) == 4
            await fails(c.search("honey", table_id="kb2"), grpc.StatusCode.FAILED_PRECONDITION)


async def test_tables_from_before_lengths_were_recorded_get_theirs_at_start(
        tmp_path: Path, fake_openai: Any, fake_openai_32: Any) -> None:
    with ServerProcess(tmp_path, env=env_with(fake_openai.base_url, 64)).start() as first:
        async for c in connect(first):
            await c.tables.CreateTable(tpb.CreateTableRequest(
                table_type=KNOWLEDGE, table_id="kb", embedding_model="ellm/embed"),
                metadata=c.md)
            await c.add([{"Title": "Tides", "Text": "The moon pulls the seas."}])
            await c.tables.CreateTable(tpb.CreateTableRequest(
                table_type=KNOWLEDGE, table_id="empty", embedding_model="ellm/embed"),
                metadata=c.md)
    # As an older server left them: no recorded lengths.
    with sqlite3.connect(tmp_path / "rowforge.db") as db:
        for storage_id, columns in db.execute(
                "SELECT storage_id, columns FROM rf_user_tables").fetchall():
            cols = json.loads(columns)
            for col in cols:
                if (col.get("gen_config") or {}).get("kind") == "embed":
                    del col["gen_config"]["dimension"]
            db.execute("UPDATE rf_user_tables SET columns = ? WHERE storage_id = ?",
                       (json.dumps(cols), storage_id))
    # Started with the model now at 32: the stored vectors say 64 (reported), the empty
    # table takes the model's 32.
    with ServerProcess(tmp_path, env=env_with(fake_openai_32.base_url, 32)).start() as second:
        assert [e["table"] for e in changed_errors(second)] == ["kb"]
        async for c in connect(second):
            for table_id, dim in (("kb", 64), ("empty", 32)):
                table = (await c.tables.GetTable(tpb.GetTableRequest(
                    table_type=KNOWLEDGE, table_id=table_id), metadata=c.md)).table
                embeds = [col.gen_config.embed.dimension for col in table.cols
                          if col.gen_config.WhichOneof("config") == "embed"]
                assert embeds == [dim, dim], table_id
            reason, _, _ = await fails(c.knowledge.HybridSearch(kpb.HybridSearchRequest(
                table_id="kb", query="moon"), metadata=c.md), grpc.StatusCode.FAILED_PRECONDITION)
            assert reason == "EMBEDDING_MODEL_CHANGED"
