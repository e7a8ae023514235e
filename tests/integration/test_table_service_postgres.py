"""TableService on a server backed by PostgreSQL: the same flows as on SQLite (per-table SQL
tables, migrations, where filters, tsvector full text, keyset pages, import/export)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from rowforge.v1 import table_service_pb2 as pb
from rowforge.v1 import table_service_pb2_grpc
from tests.conftest import server_env
from tests.integration.test_table_service import (
    ACTION,
    ROWS,
    Metadata,
    column,
    fails,
    import_csv,
    list_rows,
    make_table,
    struct,
)
from tests.support import postgres
from tests.support.server import ServerProcess


@pytest.fixture(scope="module")
def pg_server(tmp_path_factory: pytest.TempPathFactory,
              fake_openai: object) -> Iterator[ServerProcess]:
    if postgres.postgres_url() is None:
        pytest.skip(postgres.SKIP_REASON)
    url = postgres.create_database()
    try:
        env = server_env(fake_openai, ROWFORGE_DATABASE_URL=url)
        with ServerProcess(Path(tmp_path_factory.mktemp("pg-tables")), env=env) as proc:
            yield proc
    finally:
        postgres.drop_database(url)


@pytest.fixture
async def stub(pg_server: ServerProcess) -> AsyncIterator[Any]:
    async with grpc.aio.insecure_channel(pg_server.address) as channel:
        yield table_service_pb2_grpc.TableServiceStub(channel)


@pytest.fixture
def md() -> Metadata:
    return (("x-project-id", f"pg-{uuid.uuid4().hex[:12]}"),)


async def test_rows_on_postgresql(stub: Any, md: Metadata) -> None:
    await make_table(stub, md)
    assert (await import_csv(stub, md, ROWS)).row_count == 5
    assert column(await list_rows(stub, md, where="\"category\" = 'c1' AND \"n\" > 1"),
                  "n") == [3]
    assert column(await list_rows(stub, md, where="\"category\" LIKE 'C%'"), "n") == []
    assert column(await list_rows(stub, md, where="\"category\" ILIKE 'C%'"), "n") == [1, 2, 3]
    assert column(await list_rows(stub, md, search_query="machine learning"), "n") == [5]
    assert column(await list_rows(stub, md, order_by="score", descending=True),
                  "score") == [None, 2.5, 1.5, 0.5, -1.0]
    pages, token = [], ""
    while True:
        page = await list_rows(stub, md, limit=2, page_token=token, order_by="category")
        pages += column(page, "category")
        token = page.next_page_token
        if not token:
            break
    assert pages == sorted(pages)
    first = (await list_rows(stub, md)).items[0].id
    await stub.UpdateRows(pb.UpdateRowsRequest(table_type=ACTION, table_id="t", data={
        first: struct(category="machine learning again")}), metadata=md)
    assert column(await list_rows(stub, md, search_query="machine"), "n") == [1, 5]
    await fails(list_rows(stub, md, where="\"n\" = 'x'"), grpc.StatusCode.INVALID_ARGUMENT)
    await fails(list_rows(stub, md, where="\"x\"; DROP TABLE t"), grpc.StatusCode.INVALID_ARGUMENT)
    deleted = await stub.DeleteRows(pb.DeleteRowsRequest(
        table_type=ACTION, table_id="t", where="\"n\" >= 4"), metadata=md)
    assert deleted.deleted_count == 2
    chunks = [c.chunk async for c in stub.ExportRows(pb.ExportRowsRequest(
        table_type=ACTION, table_id="t"), metadata=md)]
    assert len(b"".join(chunks).decode().splitlines()) == 4


async def test_schema_changes_on_postgresql(stub: Any, md: Metadata) -> None:
    await make_table(stub, md)
    await import_csv(stub, md, ROWS)
    await stub.AddColumns(pb.AddColumnsRequest(table_type=ACTION, table_id="t", cols=[
        pb.Column(id="notes", dtype="str")]), metadata=md)
    await import_csv(stub, md, "category,notes\nc9,searchable words\n")
    assert column(await list_rows(stub, md, search_query="searchable"), "category") == ["c9"]
    await stub.DropColumns(pb.DropColumnsRequest(table_type=ACTION, table_id="t",
                                                 column_names=["notes", "score"]), metadata=md)
    assert (await list_rows(stub, md, search_query="searchable")).total == 0
    copy = (await stub.DuplicateTable(pb.DuplicateTableRequest(
        table_type=ACTION, table_id_src="t"), metadata=md)).table
    assert copy.num_rows == 6
    await import_csv(stub, md, "category\nafter copy\n", table_id=copy.id)
    assert column(await list_rows(stub, md, copy.id), "category")[-1] == "after copy"
    await stub.DeleteTable(pb.DeleteTableRequest(table_type=ACTION, table_id="t"), metadata=md)
    assert (await list_rows(stub, md, copy.id)).total == 7


async def test_concurrent_clients_on_postgresql(stub: Any, md: Metadata) -> None:
    await make_table(stub, md)

    async def load(k: int) -> None:
        body = "category,n\n" + "".join(f"w{k},{i}\n" for i in range(20))
        await import_csv(stub, md, body, chunk=50)

    async def read() -> None:
        for _ in range(5):
            page = await list_rows(stub, md, where="\"n\" >= 0", order_by="n")
            assert page.total % 20 == 0

    await asyncio.gather(*[load(k) for k in range(5)], read(), read())
    assert (await list_rows(stub, md)).total == 100
