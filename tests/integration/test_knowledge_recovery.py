"""Vector index recovery over real server processes: index files deleted or corrupted between
runs, a server SIGKILLed during ingest, and a second replica on the same PostgreSQL; each time
every row the database holds is found by search, and no deleted row is."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from rowforge.v1 import table_service_pb2 as tpb
from tests.integration.test_knowledge_service import KNOWLEDGE, Client, knowledge_env
from tests.support import postgres
from tests.support.server import ServerProcess

MD = (("x-project-id", "recovery"),)


def text(i: int) -> str:
    return f"Recovery note {i}: reading {i * 7} gauges, valve {i % 5} sealed, batch q{i}x."


async def connect(proc: ServerProcess) -> AsyncIterator[Client]:
    async with grpc.aio.insecure_channel(proc.address) as channel:
        yield Client(channel, MD)


async def stored(client: Client) -> dict[str, str]:
    """Row id -> Text of every row in the table (paged through ListRows)."""
    out: dict[str, str] = {}
    token = ""
    while True:
        reply = await client.tables.ListRows(tpb.ListRowsRequest(
            table_type=KNOWLEDGE, table_id="kb", limit=100, page_token=token,
            columns=["Text"]), metadata=client.md)
        out.update({r.id: r.cells["Text"].value.string_value for r in reply.items})
        token = reply.next_page_token
        if not token:
            return out


async def assert_index_matches_rows(client: Client, gone: set[str] = frozenset()) -> None:
    """Each stored row is the top hit for its own text; deleted rows never come back."""
    rows = await stored(client)
    assert rows
    for row_id, row_text in rows.items():
        reply = await client.search(row_text, k=3)
        assert reply.items[0].row.id == row_id and reply.items[0].vector_rank == 1
        assert not gone & {i.row.id for i in reply.items}
    everything = await client.search("recovery note gauges valve sealed batch", k=1000)
    found = {i.row.id for i in everything.items}
    assert found == set(rows)


async def add(client: Client, numbers: range) -> list[str]:
    return await client.add([{"Title": f"note {i}", "Text": text(i)} for i in numbers])


@pytest.mark.parametrize("damage", ["delete", "corrupt"])
async def test_lost_or_corrupt_index_files_are_rebuilt_from_the_database(
        tmp_path: Path, fake_openai: Any, damage: str) -> None:
    env = knowledge_env(fake_openai)
    with ServerProcess(tmp_path, env=env).start() as first:
        async for client in connect(first):
            await client.create()
            await add(client, range(30))
            await assert_index_matches_rows(client)
    files = list((tmp_path / "indexes").rglob("*.hnsw"))
    assert files, "the index was saved on shutdown"
    for path in (tmp_path / "indexes").rglob("*"):
        if path.is_file():
            if damage == "delete":
                path.unlink()
            else:
                path.write_bytes(b"\0" * 64)
    with ServerProcess(tmp_path, env=env).start() as second:
        async for client in connect(second):
            await assert_index_matches_rows(client)
            more = await add(client, range(30, 35))
            reply = await client.search(text(33), k=1)
            assert reply.items[0].row.id == more[3]
    assert list((tmp_path / "indexes").rglob("*.hnsw"))  # saved again


async def test_sigkill_during_ingest_loses_nothing_committed(tmp_path: Path,
                                                              fake_openai: Any) -> None:
    env = knowledge_env(fake_openai)
    with ServerProcess(tmp_path, env=env).start() as first:
        async for client in connect(first):
            await client.create()
            await add(client, range(40))
            await assert_index_matches_rows(client)
    # Graceful stop: the index is on disk at some watermark; now ingest and kill mid-way.
    killed = ServerProcess(tmp_path, env=env).start()
    deleted: set[str] = set()
    try:
        async for client in connect(killed):
            first_ids = await add(client, range(40, 50))
            await client.tables.DeleteRows(tpb.DeleteRowsRequest(
                table_type=KNOWLEDGE, table_id="kb", row_ids=first_ids[:3]), metadata=MD)
            deleted.update(first_ids[:3])

            halfway = asyncio.Event()

            async def ingest(client: Client = client, halfway: asyncio.Event = halfway) -> None:
                for batch, start in enumerate(range(50, 100_000, 10)):
                    await add(client, range(start, start + 10))
                    if batch == 15:
                        halfway.set()

            task = asyncio.create_task(ingest())
            await asyncio.wait_for(halfway.wait(), 60)
            assert not task.done()
            assert killed.process is not None
            killed.process.send_signal(signal.SIGKILL)
            with pytest.raises(grpc.aio.AioRpcError):
                await task
    finally:
        killed.kill()
    with ServerProcess(tmp_path, env=env).start() as third:
        async for client in connect(third):
            rows = await stored(client)
            assert len(rows) >= 47 + 160  # what was acknowledged before the kill
            await assert_index_matches_rows(client, deleted)


async def test_a_second_replica_on_postgres_sees_the_first_ones_writes(
        tmp_path: Path, fake_openai: Any) -> None:
    # (these helpers run their own event loop: keep them off this one)
    if await asyncio.to_thread(postgres.postgres_url) is None:
        pytest.skip(postgres.SKIP_REASON)
    url = await asyncio.to_thread(postgres.create_database)
    env = {**knowledge_env(fake_openai), "ROWFORGE_DATABASE_URL": url}
    try:
        with ServerProcess(tmp_path / "a", env=env).start() as a, \
                ServerProcess(tmp_path / "b", env=env).start() as b:
            async for writer in connect(a):
                async for reader in connect(b):
                    await writer.create()
                    ids = await add(writer, range(20))
                    await assert_index_matches_rows(reader)  # opened: built from the rows
                    more = await add(writer, range(20, 25))
                    await writer.tables.DeleteRows(tpb.DeleteRowsRequest(
                        table_type=KNOWLEDGE, table_id="kb", row_ids=ids[:2]), metadata=MD)
                    for _ in range(50):  # the reader polls the feed about once a second
                        top = (await reader.search(text(22), k=1)).items[0].row.id
                        if top == more[2]:
                            break
                        await asyncio.sleep(0.1)
                    await assert_index_matches_rows(reader, set(ids[:2]))
                    await assert_index_matches_rows(writer, set(ids[:2]))
    finally:
        await asyncio.to_thread(postgres.drop_database, url)


async def test_a_deleted_knowledge_table_leaves_no_index_behind(tmp_path: Path,
                                                                fake_openai: Any) -> None:
    with ServerProcess(tmp_path, env=knowledge_env(fake_openai)).start() as proc:
        async for client in connect(proc):
            await client.create()
            await add(client, range(5))
            await client.search(text(1))
            directory = tmp_path / "indexes"
            await client.tables.DeleteTable(tpb.DeleteTableRequest(
                table_type=KNOWLEDGE, table_id="kb"), metadata=MD)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await client.search(text(1))
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
            await client.create()  # same id, a new table: nothing of the old one shows
            assert (await client.search(text(1))).items == []
            await add(client, range(5, 7))
            assert {i.row.cells["Text"].value.string_value
                    for i in (await client.search(text(1), k=10)).items} == {text(5), text(6)}
    assert len([p for p in directory.iterdir() if p.is_dir()]) <= 1
