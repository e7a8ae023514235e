"""Table client logic against a fake TableService: request building, auth metadata, value
wrapping and typing, pagination by page token, stream chunks."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from google.protobuf import struct_pb2

import rowforge.clients.types as t
from rowforge.cell_values import row_values_from_pb
from rowforge.clients import AsyncRowForge, RowForge, get_value
from rowforge.clients import _convert as conv
from rowforge.v1 import common_pb2, table_service_pb2_grpc
from rowforge.v1 import table_service_pb2 as tpb
from tests.support.fake_grpc import FakeServer

ROWS = 7  # the fake table's rows, served 3 per page


def _value(v: Any) -> struct_pb2.Value:
    return conv.value_pb(v)


def _table(table_id: str) -> tpb.Table:
    return tpb.Table(id=table_id, table_type=common_pb2.TABLE_TYPE_ACTION, cols=[
        tpb.Column(id="ID", dtype="str", system=True),
        tpb.Column(id="Updated at", dtype="datetime", system=True),
        tpb.Column(id="n", dtype="int"), tpb.Column(id="x", dtype="float"),
        tpb.Column(id="s", dtype="str"),
        tpb.Column(id="out", dtype="str", gen_config=tpb.GenConfig(llm=tpb.LLMGenConfig(
            prompt="${s}"))),
    ])


def _row(i: int) -> tpb.Row:
    row = tpb.Row(id=f"r{i}")
    row.update_time.FromSeconds(1_700_000_000 + i)
    row.cells["n"].CopyFrom(tpb.Cell(value=_value(float(i))))
    row.cells["x"].CopyFrom(tpb.Cell(value=_value(2.0)))
    row.cells["s"].CopyFrom(tpb.Cell(value=_value(f"text {i}")))
    row.cells["out"].CopyFrom(tpb.Cell(value=_value(None), status=tpb.CELL_STATUS_ERROR,
                                       error="model failed"))
    return row


class Tables(table_service_pb2_grpc.TableServiceServicer):
    def __init__(self) -> None:
        self.requests: list[Any] = []

    async def CreateTable(self, request, context):
        self.requests.append(request)
        return tpb.CreateTableResponse(table=tpb.Table(id=request.table_id,
                                                       table_type=request.table_type,
                                                       cols=request.cols))

    async def GetTable(self, request, context):
        self.requests.append(request)
        return tpb.GetTableResponse(table=_table(request.table_id))

    async def ListRows(self, request, context):
        self.requests.append(request)
        start = int(request.page_token or request.offset)
        size = request.limit or 100
        end = min(start + size, ROWS)
        return tpb.ListRowsResponse(items=[_row(i) for i in range(start, end)], total=ROWS,
                                    next_page_token=str(end) if end < ROWS else "")

    async def GetRow(self, request, context):
        self.requests.append(request)
        return tpb.GetRowResponse(row=_row(3))

    async def UpdateRows(self, request, context):
        self.requests.append(request)
        return tpb.UpdateRowsResponse(updated_count=len(request.rows))

    async def AddRows(self, request, context):
        self.requests.append(request)
        return tpb.AddRowsResponse(rows=[tpb.RowCompletion(row_id="r1", columns={
            "out": tpb.CellCompletion(text="hello", value=_value("hello"),
                                      status=tpb.CELL_STATUS_DONE,
                                      usage=common_pb2.Usage(total_tokens=5))})])

    async def StreamAddRows(self, request, context):
        self.requests.append(request)
        done = tpb.CellCompletion(text="Hello world", value=_value("Hello world"),
                                  status=tpb.CELL_STATUS_DONE)
        py = tpb.CellCompletion(text="2", value=_value("2"), status=tpb.CELL_STATUS_DONE)
        for event in [
            tpb.StreamAddRowsResponse(row_created=tpb.RowCreated(row_index=0, row_id="r9")),
            tpb.StreamAddRowsResponse(references=tpb.CellReferences(
                row_id="r9", output_column_name="out", references=tpb.References(
                    table_id="kb", chunks=[tpb.Chunk(title="Doc", text="chunk", score=0.5)]))),
            tpb.StreamAddRowsResponse(delta=tpb.CellDelta(row_id="r9", output_column_name="out",
                                                          text="Hello", index=0)),
            tpb.StreamAddRowsResponse(delta=tpb.CellDelta(row_id="r9", output_column_name="out",
                                                          text=" world", index=1)),
            tpb.StreamAddRowsResponse(cell_completed=tpb.CellCompleted(
                row_id="r9", output_column_name="out", cell=done)),
            tpb.StreamAddRowsResponse(cell_completed=tpb.CellCompleted(
                row_id="r9", output_column_name="wc", cell=py)),
            tpb.StreamAddRowsResponse(row_completed=tpb.RowCompleted(
                row_index=0, row=tpb.RowCompletion(row_id="r9", columns={"out": done, "wc": py}))),
            tpb.StreamAddRowsResponse(completed=tpb.RowsCompleted(row_count=1)),
        ]:
            yield event


@pytest.fixture(scope="module")
def servicer() -> Tables:
    return Tables()


@pytest.fixture(scope="module")
def fake(servicer: Tables) -> Iterator[FakeServer]:
    with FakeServer([servicer]) as server:
        yield server


@pytest.fixture
def client(fake: FakeServer, servicer: Tables) -> Iterator[RowForge]:
    servicer.requests.clear()
    with RowForge(token="rf_tok", project_id="proj-1", address=fake.address) as c:
        yield c


def test_token_and_project_travel_as_metadata(client: RowForge, fake: FakeServer) -> None:
    client.table.get_table("action", "t")
    md = fake.calls[-1].metadata
    assert md["authorization"] == "Bearer rf_tok"
    assert md["x-project-id"] == "proj-1"
    assert md["user-agent"].startswith("rowforge-python/")


def test_create_table_request(client: RowForge, servicer: Tables) -> None:
    table = client.table.create_action_table(t.ActionTableSchemaCreate(id="qa", cols=[
        t.ColumnSchemaCreate(id="question", dtype="str"),
        t.ColumnSchemaCreate(id="answer", gen_config=t.LLMGenConfig(
            model="m", system_prompt="be brief", prompt="Q: ${question}", max_tokens=50,
            rag_params=t.RAGParams(table_id="kb", k=2))),
        t.ColumnSchemaCreate(id="len", gen_config=t.PythonGenConfig(
            python_code='row["len"] = len(row["answer"])')),
    ]))
    request = servicer.requests[-1]
    assert request.table_type == common_pb2.TABLE_TYPE_ACTION
    assert [c.id for c in request.cols] == ["question", "answer", "len"]
    assert not request.cols[0].HasField("gen_config")
    llm = request.cols[1].gen_config.llm
    assert (llm.model, llm.system_prompt, llm.prompt, llm.max_tokens) == (
        "m", "be brief", "Q: ${question}", 50)
    assert not llm.HasField("temperature")  # unset stays unset (the server's default applies)
    assert (llm.rag_params.table_id, llm.rag_params.k) == ("kb", 2)
    assert request.cols[2].gen_config.python.python_code.startswith("row[")
    assert isinstance(table.cols[1].gen_config, t.LLMGenConfig)
    assert table.cols[1].gen_config.rag_params.table_id == "kb"


@pytest.mark.parametrize("kind", ["knowledge", t.TableType.KNOWLEDGE, "KNOWLEDGE",
                                  common_pb2.TABLE_TYPE_KNOWLEDGE])
def test_table_type_spellings(client: RowForge, servicer: Tables, kind: Any) -> None:
    client.table.create_table(kind, {"id": "kb", "cols": [], "embedding_model": "e"})
    request = servicer.requests[-1]
    assert request.table_type == common_pb2.TABLE_TYPE_KNOWLEDGE
    assert request.embedding_model == "e"


def test_rows_are_wrapped_and_typed(client: RowForge, servicer: Tables) -> None:
    page = client.table.list_table_rows("action", "t", offset=2, limit=3, where='"n" > 1',
                                        columns=["n", "s"], search_query="text")
    request = servicer.requests[-1]
    assert (request.offset, request.limit, request.where) == (2, 3, '"n" > 1')
    assert list(request.columns) == ["n", "s"] and request.search_query == "text"
    assert (page.total, page.offset, page.limit, page.next_page_token) == (ROWS, 2, 3, "5")
    row = page.items[0]
    assert row["ID"] == "r2"
    assert row["Updated at"].startswith("2023-11-14T22:13:22")
    assert row["n"] == {"value": 2} and type(row["n"]["value"]) is int
    assert row["x"] == {"value": 2.0} and type(row["x"]["value"]) is float
    assert row["s"] == {"value": "text 2"}
    assert row["out"] == {"value": None, "status": "error", "error": "model failed"}
    assert get_value(row["s"]) == "text 2" and get_value("plain") == "plain"


def test_iter_rows_follows_page_tokens(client: RowForge, servicer: Tables) -> None:
    ids = [row["ID"] for row in client.table.iter_table_rows("action", "t", where="w",
                                                             page_size=3)]
    assert ids == [f"r{i}" for i in range(ROWS)]
    pages = [r for r in servicer.requests if isinstance(r, tpb.ListRowsRequest)]
    assert [p.page_token for p in pages] == ["", "3", "6"]
    assert all(p.where == "w" and p.limit == 3 for p in pages)
    # The table's column types were fetched once, not per page.
    assert sum(isinstance(r, tpb.GetTableRequest) for r in servicer.requests) <= 1
    assert len(client.table.list_all_rows("action", "t", page_size=2)) == ROWS


async def test_iter_rows_async(fake: FakeServer) -> None:
    async with AsyncRowForge(address=fake.address) as client:
        ids = [row["ID"] async for row in client.table.iter_table_rows("action", "t",
                                                                       page_size=4)]
        assert ids == [f"r{i}" for i in range(ROWS)]
        assert len(await client.table.list_all_rows("action", "t")) == ROWS
        row = await client.table.get_table_row("action", "t", "r3")
        assert row["n"]["value"] == 3


def test_update_accepts_rows_read_back(client: RowForge, servicer: Tables) -> None:
    row = client.table.get_table_row("action", "t", "r3")
    row["s"] = {"value": "changed"}
    result = client.table.update_table_rows("action", t.MultiRowUpdateRequest(
        table_id="t", data={row["ID"]: row}))
    request = servicer.requests[-1]
    values = row_values_from_pb(request.rows["r3"])
    assert values["s"] == "changed" and values["n"] == 3
    assert "ID" not in values and "Updated at" not in values
    assert result.count == 1


def test_add_rows_without_stream(client: RowForge, servicer: Tables) -> None:
    response = client.table.add_table_rows("action", t.MultiRowAddRequest(
        table_id="t", data=[{"s": "hi", "n": 1}], stream=False, concurrent=False))
    request = servicer.requests[-1]
    assert isinstance(request, tpb.AddRowsRequest) and request.concurrent is False
    assert not request.data and request.legacy_values is False
    assert row_values_from_pb(request.rows[0]) == {"s": "hi", "n": 1}
    # A fresh idempotency key per call: a retried AddRows cannot add the rows twice.
    assert len(request.idempotency_key) == 32
    client.table.add_table_rows("action", t.MultiRowAddRequest(
        table_id="t", data=[{"s": "hi"}], stream=False, idempotency_key="mine"))
    assert servicer.requests[-1].idempotency_key == "mine"
    assert response.rows[0].row_id == "r1"
    cell = response.rows[0].columns["out"]
    assert (cell.text, cell.value, cell.status, cell.usage.total_tokens) == (
        "hello", "hello", t.CellStatus.DONE, 5)


def test_stream_chunks_print_each_cell_once(client: RowForge) -> None:
    chunks = list(client.table.add_table_rows("action", t.MultiRowAddRequest(
        table_id="t", data=[{"s": "hi"}], stream=True)))
    assert [c.event for c in chunks] == ["row_created", "references", "delta", "delta",
                                         "cell_completed", "cell_completed", "row_completed",
                                         "completed"]
    # The seed's loop: streamed text once, a Python column's value once (on completion).
    assert "".join(c.text for c in chunks if c.output_column_name == "out") == "Hello world"
    assert "".join(c.text for c in chunks if c.output_column_name == "wc") == "2"
    assert all(c.row_id == "r9" for c in chunks[:-1])
    assert chunks[1].references.chunks[0].title == "Doc"
    assert chunks[6].row.columns["out"].text == "Hello world"
    assert chunks[-1].row_count == 1


async def test_stream_chunks_async(fake: FakeServer) -> None:
    async with AsyncRowForge(address=fake.address) as client:
        request = t.MultiRowAddRequest(table_id="t", data=[{"s": "hi"}], stream=True)
        text = "".join([c.text async for c in await client.table.add_table_rows("action",
                                                                                  request)
                        if c.output_column_name == "out"])
        # Without awaiting first works too.
        events = [c.event async for c in client.table.add_table_rows("action", request)]
    assert text == "Hello world"
    assert events[-1] == "completed"


def test_closing_a_stream_early_cancels_it(client: RowForge) -> None:
    stream = client.table.add_table_rows("action", t.MultiRowAddRequest(
        table_id="t", data=[{"s": "hi"}], stream=True))
    first = next(stream)
    stream.close()
    assert first.event == "row_created"
    with pytest.raises(StopIteration):
        next(stream)


def test_deprecated_requests_warn_and_still_work(client: RowForge, servicer: Tables) -> None:
    with pytest.warns(DeprecationWarning, match="MultiRowAddRequest"):
        request = t.RowAddRequest(table_id="t", data={"s": "old"}, stream=False)
    client.table.add_table_rows("action", request)
    assert row_values_from_pb(servicer.requests[-1].rows[0]) == {"s": "old"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t.MultiRowAddRequest(table_id="t", data=[{"s": "new"}])  # no warning
    with pytest.warns(DeprecationWarning):
        assert client.model_names is not None and t.RowDeleteRequest(table_id="t", row_ids=["a"])


def test_gen_config_dicts_are_recognised() -> None:
    col = t.ColumnSchemaCreate.model_validate({"id": "c", "gen_config": {"python_code": "x"}})
    assert isinstance(col.gen_config, t.PythonGenConfig)
    col = t.ColumnSchemaCreate.model_validate({"id": "c", "gen_config": {"prompt": "${a}"}})
    assert isinstance(col.gen_config, t.LLMGenConfig)
    col = t.ColumnSchemaCreate.model_validate(
        {"id": "c", "gen_config": {"embedding_model": "e", "source_column": "Text"}})
    assert isinstance(col.gen_config, t.EmbedGenConfig)
    with pytest.raises(ValueError):
        t.LLMGenConfig(temperature=3.0)
    with pytest.raises(ValueError):
        t.ChatRequest(messages=[])
