"""TableService over a real server: every table, column and row RPC of the store, every bad
input with its status and details, and nothing half-written.

Rows are written through ImportRows (generation off) so these tests do not depend on the row
engine; the generation RPCs are covered by ``test_table_generation*.py``.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2

from rowforge.v1 import common_pb2, file_service_pb2, file_service_pb2_grpc, table_service_pb2_grpc
from rowforge.v1 import table_service_pb2 as pb
from tests.support.status import fails

ACTION, KNOWLEDGE, CHAT = (common_pb2.TABLE_TYPE_ACTION, common_pb2.TABLE_TYPE_KNOWLEDGE,
                           common_pb2.TABLE_TYPE_CHAT)
Metadata = tuple[tuple[str, str], ...]


# -- helpers -------------------------------------------------------------------------------

@pytest.fixture
def md() -> Metadata:
    """A fresh project per test (auth is off: x-project-id selects it)."""
    return (("x-project-id", f"tt-{uuid.uuid4().hex[:12]}"),)


@pytest.fixture
async def stub(channel: grpc.aio.Channel) -> table_service_pb2_grpc.TableServiceStub:
    return table_service_pb2_grpc.TableServiceStub(channel)


def llm(prompt: str = "", **kw: Any) -> pb.GenConfig:
    return pb.GenConfig(llm=pb.LLMGenConfig(prompt=prompt, **kw))


def col(name: str, dtype: str = "str", gen: pb.GenConfig | None = None) -> pb.Column:
    return pb.Column(id=name, dtype=dtype, gen_config=gen) if gen else pb.Column(id=name,
                                                                                 dtype=dtype)


async def make_table(stub: Any, md: Metadata, table_id: str = "t") -> pb.Table:
    reply = await stub.CreateTable(pb.CreateTableRequest(
        table_type=ACTION, table_id=table_id, cols=[
            col("category"), col("n", "int"), col("score", "float"), col("ok", "bool"),
            col("answer", gen=llm("Answer ${category}"))]), metadata=md)
    return reply.table


def import_requests(table_id: str, text: str, *, fmt: int = pb.DELIMITED_FORMAT_CSV,
                    chunk: int = 7, table_type: int = ACTION,
                    generate: bool = False) -> Iterator[pb.ImportRowsRequest]:
    yield pb.ImportRowsRequest(metadata=pb.ImportRowsMetadata(
        table_type=table_type, table_id=table_id, format=fmt, generate=generate))
    data = text.encode()
    for start in range(0, len(data), chunk):
        yield pb.ImportRowsRequest(chunk=data[start:start + chunk])


async def import_csv(stub: Any, md: Metadata, text: str, table_id: str = "t",
                     **kw: Any) -> pb.ImportRowsResponse:
    return await stub.ImportRows(import_requests(table_id, text, **kw), metadata=md)


ROWS = ("category,n,score,ok\n"
        "c1,1,0.5,true\n"
        "c2,2,1.5,false\n"
        "c1,3,,\n"
        "\"quoted, with comma\",4,2.5,true\n"
        "\"machine learning\nover two lines\",5,-1,false\n")


async def list_rows(stub: Any, md: Metadata, table_id: str = "t", **kw: Any
                    ) -> pb.ListRowsResponse:
    return await stub.ListRows(pb.ListRowsRequest(table_type=ACTION, table_id=table_id, **kw),
                               metadata=md)


def column(reply: pb.ListRowsResponse, name: str) -> list[Any]:
    out = []
    for row in reply.items:
        value = row.cells[name].value
        kind = value.WhichOneof("kind")
        out.append(None if kind == "null_value" else getattr(value, kind))
    return out


def struct(**values: Any) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(values)
    return out


# -- tables --------------------------------------------------------------------------------

async def test_table_lifecycle(stub: Any, md: Metadata) -> None:
    table = await make_table(stub, md)
    assert [c.id for c in table.cols] == ["ID", "Updated at", "category", "n", "score", "ok",
                                          "answer"]
    assert table.cols[0].system and table.cols[1].dtype == "datetime"
    assert table.cols[6].gen_config.llm.prompt == "Answer ${category}"
    assert table.create_time.seconds > 0
    await import_csv(stub, md, ROWS)
    got = (await stub.GetTable(pb.GetTableRequest(table_type=ACTION, table_id="t"),
                               metadata=md)).table
    assert got.num_rows == 5
    copy = (await stub.DuplicateTable(pb.DuplicateTableRequest(
        table_type=ACTION, table_id_src="t"), metadata=md)).table
    assert copy.id == "t_copy_1" and copy.num_rows == 5
    bare = (await stub.DuplicateTable(pb.DuplicateTableRequest(
        table_type=ACTION, table_id_src="t", table_id_dst="bare", include_data=False),
        metadata=md)).table
    assert bare.num_rows == 0
    renamed = (await stub.RenameTable(pb.RenameTableRequest(
        table_type=ACTION, table_id_src="bare", table_id_dst="renamed"), metadata=md)).table
    assert renamed.id == "renamed"
    listed = await stub.ListTables(pb.ListTablesRequest(table_type=ACTION, count_rows=True,
                                                        limit=2), metadata=md)
    assert [t.id for t in listed.items] == ["renamed", "t"] and listed.total == 3
    assert [t.num_rows for t in listed.items] == [0, 5]
    rest = await stub.ListTables(pb.ListTablesRequest(
        table_type=ACTION, limit=2, page_token=listed.next_page_token), metadata=md)
    assert [t.id for t in rest.items] == ["t_copy_1"] and not rest.next_page_token
    prefixed = await stub.ListTables(pb.ListTablesRequest(table_type=ACTION, search_query="T_"),
                                     metadata=md)
    assert [t.id for t in prefixed.items] == ["t_copy_1"]
    await stub.DeleteTable(pb.DeleteTableRequest(table_type=ACTION, table_id="t_copy_1"),
                           metadata=md)
    await fails(stub.GetTable(pb.GetTableRequest(table_type=ACTION, table_id="t_copy_1"),
                              metadata=md), grpc.StatusCode.NOT_FOUND)


async def test_list_tables_without_a_type_lists_every_type(stub: Any, md: Metadata) -> None:
    for kind, table_id in ((ACTION, "same"), (CHAT, "same"), (KNOWLEDGE, "kb_all"),
                           (ACTION, "a_all")):
        cols = [col("User"), col("AI", gen=llm("${User}"))] if kind == CHAT else []
        if kind == ACTION:
            cols = [col("x")]
        await stub.CreateTable(pb.CreateTableRequest(table_type=kind, table_id=table_id,
                                                     cols=cols), metadata=md)
    everything = await stub.ListTables(pb.ListTablesRequest(count_rows=True), metadata=md)
    assert [(t.id, t.table_type) for t in everything.items] == [
        ("a_all", ACTION), ("kb_all", KNOWLEDGE), ("same", ACTION), ("same", CHAT)]
    assert everything.total == 4
    # Pages follow (id, type): two tables with one id are neither skipped nor repeated.
    seen, token = [], ""
    while True:
        page = await stub.ListTables(pb.ListTablesRequest(limit=1, page_token=token),
                                     metadata=md)
        seen += [(t.id, t.table_type) for t in page.items]
        token = page.next_page_token
        if not token:
            break
    assert seen == [(t.id, t.table_type) for t in everything.items]
    only_chat = await stub.ListTables(pb.ListTablesRequest(table_type=CHAT), metadata=md)
    assert [t.id for t in only_chat.items] == ["same"]
    await fails(stub.ListTables(pb.ListTablesRequest(table_type=7), metadata=md),
                grpc.StatusCode.INVALID_ARGUMENT)


async def test_knowledge_and_chat_tables(stub: Any, md: Metadata) -> None:
    kb = (await stub.CreateTable(pb.CreateTableRequest(table_type=KNOWLEDGE, table_id="kb"),
                                 metadata=md)).table
    assert [c.id for c in kb.cols] == ["ID", "Updated at", "Title", "Title Embed", "Text",
                                       "Text Embed", "File ID", "Page"]
    assert kb.cols[3].dtype == "embedding" and kb.cols[3].gen_config.embed.source_column == \
        "Title"
    assert kb.embedding_model == "rowforge/embed"
    chat = (await stub.CreateTable(pb.CreateTableRequest(table_type=CHAT, table_id="c", cols=[
        col("User"), col("AI", gen=llm(system_prompt="You are helpful."))]), metadata=md)).table
    assert [c.id for c in chat.cols][2:] == ["User", "AI"]
    _, _, fields = await fails(stub.CreateTable(pb.CreateTableRequest(
        table_type=CHAT, table_id="c2", cols=[col("User")]), metadata=md),
        grpc.StatusCode.INVALID_ARGUMENT)
    assert "cols" in fields
    # A RAG column's knowledge table may be deleted: the column dangles (GetTable says so).
    await stub.CreateTable(pb.CreateTableRequest(table_type=ACTION, table_id="qa", cols=[
        col("q"), col("a", gen=llm("${q}", rag_params=pb.RAGParams(table_id="kb")))]),
        metadata=md)
    qa = (await stub.GetTable(pb.GetTableRequest(table_type=ACTION, table_id="qa"),
                              metadata=md)).table
    assert qa.cols[3].gen_config.llm.rag_params.k == 3  # the default
    assert list(qa.dangling_references) == []
    await stub.DeleteTable(pb.DeleteTableRequest(table_type=KNOWLEDGE, table_id="kb"),
                           metadata=md)
    qa = (await stub.GetTable(pb.GetTableRequest(table_type=ACTION, table_id="qa"),
                              metadata=md)).table
    assert [(d.column_id, d.table_id) for d in qa.dangling_references] == [("a", "kb")]


@pytest.mark.parametrize("request_, code, field", [
    (pb.CreateTableRequest(table_type=ACTION, table_id="bad/id"),
     grpc.StatusCode.INVALID_ARGUMENT, "table_id"),
    (pb.CreateTableRequest(table_type=ACTION, table_id="x" * 101),
     grpc.StatusCode.INVALID_ARGUMENT, "table_id"),
    (pb.CreateTableRequest(table_id="t"), grpc.StatusCode.INVALID_ARGUMENT, "table_type"),
    (pb.CreateTableRequest(table_type=ACTION, table_id="t", cols=[col("ID")]),
     grpc.StatusCode.INVALID_ARGUMENT, "cols[0].id"),
    (pb.CreateTableRequest(table_type=ACTION, table_id="t", cols=[col("a"), col("A")]),
     grpc.StatusCode.INVALID_ARGUMENT, "cols[1].id"),
    (pb.CreateTableRequest(table_type=ACTION, table_id="t", cols=[col("a", "json")]),
     grpc.StatusCode.INVALID_ARGUMENT, "cols[0].dtype"),
    (pb.CreateTableRequest(table_type=ACTION, table_id="t", cols=[col("a b/c")]),
     grpc.StatusCode.INVALID_ARGUMENT, "cols[0].id"),
    (pb.CreateTableRequest(table_type=ACTION, table_id="t", cols=[
        col("a", gen=llm("${b}")), col("b", gen=llm("${a}"))]),
     grpc.StatusCode.INVALID_ARGUMENT, "cols[0].gen_config.llm.prompt"),
    (pb.CreateTableRequest(table_type=ACTION, table_id="t", cols=[
        col("q"), col("a", gen=llm("${q}", temperature=2.5))]),
     grpc.StatusCode.INVALID_ARGUMENT, "cols[1].gen_config.llm.temperature"),
    (pb.CreateTableRequest(table_type=ACTION, table_id="t", cols=[
        col("a", "int", gen=pb.GenConfig(python=pb.PythonGenConfig(python_code="if x\n"))),
    ]), grpc.StatusCode.INVALID_ARGUMENT, "cols[0].gen_config.python.python_code"),
    (pb.CreateTableRequest(table_type=ACTION, table_id="t", cols=[
        col("a", gen=llm("hi", model="no/such-model"))]),
     grpc.StatusCode.NOT_FOUND, "cols[0].gen_config.llm.model"),
    (pb.CreateTableRequest(table_type=ACTION, table_id="t", cols=[
        col("a", gen=llm("hi", model="rowforge/embed"))]),
     grpc.StatusCode.INVALID_ARGUMENT, "cols[0].gen_config.llm.model"),
    (pb.CreateTableRequest(table_type=ACTION, table_id="t", cols=[
        col("a", gen=llm("hi", rag_params=pb.RAGParams(table_id="nope")))]),
     grpc.StatusCode.NOT_FOUND, "cols[0].gen_config.llm.rag_params.table_id"),
])
async def test_create_refusals(stub: Any, md: Metadata, request_: pb.CreateTableRequest,
                               code: grpc.StatusCode, field: str) -> None:
    _, _, fields = await fails(stub.CreateTable(request_, metadata=md), code)
    assert field in fields, fields
    listed = await stub.ListTables(pb.ListTablesRequest(table_type=ACTION), metadata=md)
    assert listed.total == 0


async def test_table_conflicts_and_unknowns(stub: Any, md: Metadata) -> None:
    await make_table(stub, md)
    await make_table(stub, md, "other")
    reason, _, _ = await fails(make_table(stub, md), grpc.StatusCode.ALREADY_EXISTS)
    assert reason == "TABLE_ALREADY_EXISTS"
    await fails(stub.RenameTable(pb.RenameTableRequest(
        table_type=ACTION, table_id_src="t", table_id_dst="other"), metadata=md),
        grpc.StatusCode.ALREADY_EXISTS)
    for call in (
        stub.GetTable(pb.GetTableRequest(table_type=ACTION, table_id="nope"), metadata=md),
        stub.GetTable(pb.GetTableRequest(table_type=CHAT, table_id="t"), metadata=md),
        stub.DeleteTable(pb.DeleteTableRequest(table_type=ACTION, table_id="nope"), metadata=md),
        stub.GetTable(pb.GetTableRequest(table_type=ACTION, table_id="t"),
                      metadata=(("x-project-id", "someone-else"),)),
    ):
        reason, _, _ = await fails(call, grpc.StatusCode.NOT_FOUND)
        assert reason == "TABLE_NOT_FOUND"
    await fails(stub.ListTables(pb.ListTablesRequest(table_type=ACTION, limit=101), metadata=md),
                grpc.StatusCode.INVALID_ARGUMENT)


# -- columns -------------------------------------------------------------------------------

async def test_column_operations(stub: Any, md: Metadata) -> None:
    await make_table(stub, md)
    await import_csv(stub, md, ROWS)
    table = (await stub.AddColumns(pb.AddColumnsRequest(
        table_type=ACTION, table_id="t", cols=[col("notes"), col("size", "int")]),
        metadata=md)).table
    assert [c.id for c in table.cols][-2:] == ["notes", "size"]
    table = (await stub.RenameColumns(pb.RenameColumnsRequest(
        table_type=ACTION, table_id="t", column_map={"category": "topic"}), metadata=md)).table
    assert table.cols[6].gen_config.llm.prompt == "Answer ${topic}"
    assert column(await list_rows(stub, md), "topic")[0] == "c1"
    table = (await stub.ReorderColumns(pb.ReorderColumnsRequest(
        table_type=ACTION, table_id="t",
        column_names=["n", "topic", "answer", "score", "ok", "size", "notes"]),
        metadata=md)).table
    assert [c.id for c in table.cols][2:5] == ["n", "topic", "answer"]
    table = (await stub.UpdateGenConfig(pb.UpdateGenConfigRequest(
        table_type=ACTION, table_id="t", column_map={
            "notes": llm("Note on ${topic}", temperature=0.0),
            "answer": pb.GenConfig()}), metadata=md)).table
    by_id = {c.id: c for c in table.cols}
    assert by_id["notes"].gen_config.llm.HasField("temperature")
    assert not by_id["answer"].HasField("gen_config")
    table = (await stub.DropColumns(pb.DropColumnsRequest(
        table_type=ACTION, table_id="t", column_names=["score", "answer"]), metadata=md)).table
    assert "score" not in [c.id for c in table.cols]
    assert column(await list_rows(stub, md), "n") == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("call, field", [
    (lambda s, md: s.AddColumns(pb.AddColumnsRequest(
        table_type=ACTION, table_id="t", cols=[col("N")]), metadata=md), "cols[0].id"),
    (lambda s, md: s.AddColumns(pb.AddColumnsRequest(
        table_type=ACTION, table_id="t", cols=[col("x", gen=llm("${nope}"))]), metadata=md),
     "cols[0].gen_config.llm.prompt"),
    (lambda s, md: s.DropColumns(pb.DropColumnsRequest(
        table_type=ACTION, table_id="t", column_names=["category"]), metadata=md),
     "column_names"),
    (lambda s, md: s.DropColumns(pb.DropColumnsRequest(
        table_type=ACTION, table_id="t", column_names=["ghost"]), metadata=md),
     "column_names[0]"),
    (lambda s, md: s.RenameColumns(pb.RenameColumnsRequest(
        table_type=ACTION, table_id="t", column_map={"n": "Updated at"}), metadata=md),
     "column_map[n]"),
    (lambda s, md: s.ReorderColumns(pb.ReorderColumnsRequest(
        table_type=ACTION, table_id="t",
        column_names=["answer", "category", "n", "score", "ok"]), metadata=md),
     "column_names"),
    (lambda s, md: s.UpdateGenConfig(pb.UpdateGenConfigRequest(
        table_type=ACTION, table_id="t", column_map={"category": llm("${answer}")}), metadata=md),
     "column_map[category].gen_config.llm.prompt"),
])
async def test_column_refusals_change_nothing(stub: Any, md: Metadata, call: Any,
                                              field: str) -> None:
    before = await make_table(stub, md)
    _, _, fields = await fails(call(stub, md), grpc.StatusCode.INVALID_ARGUMENT)
    assert any(f.startswith(field) for f in fields), fields
    after = (await stub.GetTable(pb.GetTableRequest(table_type=ACTION, table_id="t"),
                                 metadata=md)).table
    assert list(after.cols) == list(before.cols)


# -- rows ----------------------------------------------------------------------------------

async def test_import_list_get_update_delete(stub: Any, md: Metadata) -> None:
    await make_table(stub, md)
    imported = await import_csv(stub, md, ROWS)
    assert imported.row_count == 5 and imported.error_count == 0
    reply = await list_rows(stub, md)
    assert reply.total == 5 and not reply.next_page_token
    assert column(reply, "category")[3:] == ["quoted, with comma",
                                             "machine learning\nover two lines"]
    assert column(reply, "ok") == [True, False, None, True, False]
    first = reply.items[0]
    assert first.cells["category"].status == pb.CELL_STATUS_UNSPECIFIED
    assert first.cells["answer"].status == pb.CELL_STATUS_SKIPPED  # imported without generation
    row = (await stub.GetRow(pb.GetRowRequest(table_type=ACTION, table_id="t", row_id=first.id,
                                              columns=["n"]), metadata=md)).row
    assert set(row.cells) == {"n"} and row.cells["n"].value.number_value == 1
    updated = await stub.UpdateRows(pb.UpdateRowsRequest(table_type=ACTION, table_id="t", data={
        first.id: struct(n=10.0, category="edited", answer="by hand")}), metadata=md)
    assert updated.updated_count == 1
    row = (await stub.GetRow(pb.GetRowRequest(table_type=ACTION, table_id="t", row_id=first.id),
                             metadata=md)).row
    assert row.cells["category"].value.string_value == "edited"
    assert row.cells["answer"].value.string_value == "by hand"
    assert row.cells["answer"].status == pb.CELL_STATUS_DONE
    deleted = await stub.DeleteRows(pb.DeleteRowsRequest(
        table_type=ACTION, table_id="t", row_ids=[first.id], where="\"n\" >= 4"), metadata=md)
    assert deleted.deleted_count == 3
    assert column(await list_rows(stub, md), "n") == [2, 3]


async def test_list_rows_filters_search_order_and_pages(stub: Any, md: Metadata) -> None:
    await make_table(stub, md)
    await import_csv(stub, md, ROWS)
    filtered = await list_rows(stub, md, where="\"category\" = 'c1' AND \"n\" > 1")
    assert column(filtered, "n") == [3] and filtered.total == 1
    assert column(await list_rows(stub, md, where="\"category\" LIKE '%with%'"), "n") == [4]
    assert column(await list_rows(stub, md, search_query="machine learning"), "n") == [5]
    assert column(await list_rows(stub, md, search_query="machine", search_columns=["answer"]),
                  "n") == []
    ordered = await list_rows(stub, md, order_by="score", descending=True)
    assert column(ordered, "score") == [None, 2.5, 1.5, 0.5, -1.0]
    selected = await list_rows(stub, md, columns=["n"])
    assert set(selected.items[0].cells) == {"n"} and selected.items[0].id
    pages, token = [], ""
    while True:
        page = await list_rows(stub, md, limit=2, page_token=token, order_by="n")
        pages.append(column(page, "n"))
        token = page.next_page_token
        if not token:
            break
    assert pages == [[1, 2], [3, 4], [5]]
    assert column(await list_rows(stub, md, offset=3, limit=1), "n") == [4]
    first = await list_rows(stub, md, limit=2)
    reason, _, fields = await fails(list_rows(stub, md, limit=2, where="\"n\" > 0",
                                              page_token=first.next_page_token),
                                    grpc.StatusCode.INVALID_ARGUMENT)
    assert reason == "PAGE_TOKEN_MISMATCH" and "page_token" in fields


@pytest.mark.parametrize("kwargs, field, needle", [
    ({"limit": 101}, "limit", "between 1 and 100"),
    ({"limit": -5}, "limit", "between 1 and 100"),
    ({"offset": -1}, "offset", "negative"),
    ({"where": "\"nope\" = 'x'"}, "where", "unknown column 'nope'"),
    ({"where": "\"n\" = 'x'"}, "where", "number"),
    ({"where": "\"category\" = '' OR 1=1 --'"}, "where", "comments"),
    ({"where": "\"x\"; DROP TABLE t"}, "where", ""),
    ({"where": "\"category\" = 'a'; DELETE FROM rf_user_tables"}, "where", "single condition"),
    ({"where": "\"category\" = \u2018a\u2019"}, "where", ""),
    ({"where": "\"category\" IN (SELECT secret_hash FROM rf_tokens)"}, "where", ""),
    ({"where": "sqlite_version() = '3'"}, "where", "not allowed"),
    ({"columns": ["ghost"]}, "columns[0]", "unknown column"),
    ({"order_by": "ghost"}, "order_by", "unknown column"),
    ({"search_query": "x", "search_columns": ["n"]}, "search_columns[0]", "not a text column"),
    ({"page_token": "not-a-token"}, "page_token", "not a valid page token"),
])
async def test_list_rows_bad_input(stub: Any, md: Metadata, kwargs: dict[str, Any], field: str,
                                   needle: str) -> None:
    await make_table(stub, md)
    await import_csv(stub, md, ROWS)
    _, _, fields = await fails(list_rows(stub, md, **kwargs), grpc.StatusCode.INVALID_ARGUMENT)
    assert field in fields and needle in fields[field], fields
    assert (await list_rows(stub, md)).total == 5  # the table is intact


async def test_row_errors(stub: Any, md: Metadata) -> None:
    await make_table(stub, md)
    await import_csv(stub, md, ROWS)
    row_id = (await list_rows(stub, md)).items[0].id
    reason, _, _ = await fails(stub.GetRow(pb.GetRowRequest(
        table_type=ACTION, table_id="t", row_id="nope"), metadata=md), grpc.StatusCode.NOT_FOUND)
    assert reason == "ROW_NOT_FOUND"
    other = (("x-project-id", "intruder"),)
    await fails(stub.GetRow(pb.GetRowRequest(table_type=ACTION, table_id="t", row_id=row_id),
                            metadata=other), grpc.StatusCode.NOT_FOUND)
    await fails(stub.UpdateRows(pb.UpdateRowsRequest(table_type=ACTION, table_id="t", data={
        row_id: struct(n=1.0)}), metadata=other), grpc.StatusCode.NOT_FOUND)
    await fails(stub.DeleteRows(pb.DeleteRowsRequest(table_type=ACTION, table_id="t",
                                                     row_ids=[row_id]), metadata=other),
                grpc.StatusCode.NOT_FOUND)
    for data, field in [({row_id: struct(n=1.5)}, f"data[{row_id}].n"),
                        ({row_id: struct(category=3.0)}, f"data[{row_id}].category"),
                        ({row_id: struct(ok="yes")}, f"data[{row_id}].ok"),
                        ({row_id: struct(ghost=1.0)}, f"data[{row_id}].ghost"),
                        ({row_id: struct(ID="x")}, f"data[{row_id}].ID")]:
        _, _, fields = await fails(stub.UpdateRows(pb.UpdateRowsRequest(
            table_type=ACTION, table_id="t", data=data), metadata=md),
            grpc.StatusCode.INVALID_ARGUMENT)
        assert field in fields, fields
    await fails(stub.UpdateRows(pb.UpdateRowsRequest(table_type=ACTION, table_id="t", data={
        row_id: struct(n=7.0), "missing": struct(n=7.0)}), metadata=md), grpc.StatusCode.NOT_FOUND)
    many = {f"r{i}": struct(n=1.0) for i in range(101)}
    await fails(stub.UpdateRows(pb.UpdateRowsRequest(table_type=ACTION, table_id="t", data=many),
                                metadata=md), grpc.StatusCode.INVALID_ARGUMENT)
    await fails(stub.DeleteRows(pb.DeleteRowsRequest(table_type=ACTION, table_id="t"),
                                metadata=md), grpc.StatusCode.INVALID_ARGUMENT)
    await fails(stub.DeleteRows(pb.DeleteRowsRequest(table_type=ACTION, table_id="t",
                                                     where="1 = 1 OR \"x\" = 1"), metadata=md),
                grpc.StatusCode.INVALID_ARGUMENT)
    assert column(await list_rows(stub, md), "n") == [1, 2, 3, 4, 5]  # nothing was written


# -- import / export -----------------------------------------------------------------------

async def test_import_tsv_in_odd_chunks_and_export_round_trip(stub: Any, md: Metadata) -> None:
    await make_table(stub, md)
    tsv = "n\tcategory\tanswer\n1\tt\u00e9st \U0001f600\tgiven\n2\ttab-free\t\n"
    reply = await import_csv(stub, md, tsv, fmt=pb.DELIMITED_FORMAT_TSV, chunk=3)
    assert reply.row_count == 2
    rows = await list_rows(stub, md)
    assert column(rows, "category") == ["t\u00e9st \U0001f600", "tab-free"]
    assert rows.items[0].cells["answer"].status == pb.CELL_STATUS_DONE  # value given
    chunks = [c.chunk async for c in stub.ExportRows(pb.ExportRowsRequest(
        table_type=ACTION, table_id="t", columns=["n", "category"]), metadata=md)]
    text = b"".join(chunks).decode()
    lines = text.splitlines()
    assert lines[0] == "ID,Updated at,category,n"  # the table's column order
    assert lines[1].endswith(",t\u00e9st \U0001f600,1")
    # An export imports back (ID and Updated at are ignored).
    await stub.CreateTable(pb.CreateTableRequest(table_type=ACTION, table_id="copy", cols=[
        col("category"), col("n", "int")]), metadata=md)
    back = await import_csv(stub, md, text, table_id="copy", chunk=5)
    assert back.row_count == 2
    assert column(await list_rows(stub, md, "copy"), "n") == [1, 2]


async def test_export_is_chunked_and_filtered(stub: Any, md: Metadata) -> None:
    await make_table(stub, md)
    body = "category,n\n" + "".join(f"{'x' * 200}-{i},{i}\n" for i in range(800))
    await import_csv(stub, md, body, chunk=64 * 1024)
    chunks = [c.chunk async for c in stub.ExportRows(pb.ExportRowsRequest(
        table_type=ACTION, table_id="t"), metadata=md)]
    assert len(chunks) > 1
    lines = b"".join(chunks).decode().splitlines()
    assert lines[0] == "ID,Updated at,category,n,score,ok,answer" and len(lines) == 801
    filtered = [c.chunk async for c in stub.ExportRows(pb.ExportRowsRequest(
        table_type=ACTION, table_id="t", format=pb.DELIMITED_FORMAT_TSV, where="\"n\" < 3"),
        metadata=md)]
    assert len(b"".join(filtered).decode().splitlines()) == 4
    await fails(stub.ExportRows(pb.ExportRowsRequest(table_type=ACTION, table_id="t",
                                                     where="\"ghost\" = 1"), metadata=md),
                grpc.StatusCode.INVALID_ARGUMENT)


def _messages(*items: pb.ImportRowsRequest) -> Iterable[pb.ImportRowsRequest]:
    return list(items)


META = pb.ImportRowsRequest(metadata=pb.ImportRowsMetadata(table_type=ACTION, table_id="t"))


@pytest.mark.parametrize("messages, field", [
    (_messages(pb.ImportRowsRequest(chunk=b"n\n1\n")), "metadata"),
    (_messages(META, META), "metadata"),
    (_messages(META), "chunk"),
    (_messages(META, pb.ImportRowsRequest(chunk=b"ghost\n1\n")), "header"),
    (_messages(META, pb.ImportRowsRequest(chunk=b"n\n1\n2.5\nx\n")), "line 3"),
    (_messages(META, pb.ImportRowsRequest(chunk=b"n,category\n1,\"open\n")), "line 2"),
    (_messages(META, pb.ImportRowsRequest(chunk=b"n,category\n1,a,extra\n")), "line 2"),
    (_messages(META, pb.ImportRowsRequest(chunk=b"category\n\xff\n")), "line 2"),
    (_messages(META, pb.ImportRowsRequest(chunk=b"x" * (1024 * 1024 + 1))), "chunk"),
])
async def test_bad_imports_write_nothing(stub: Any, md: Metadata,
                                         messages: list[pb.ImportRowsRequest],
                                         field: str) -> None:
    await make_table(stub, md)
    _, _, fields = await fails(stub.ImportRows(iter(messages), metadata=md),
                               grpc.StatusCode.INVALID_ARGUMENT)
    assert field in fields, fields
    assert (await list_rows(stub, md)).total == 0


async def test_import_into_unknown_table(stub: Any, md: Metadata) -> None:
    await fails(import_csv(stub, md, "n\n1\n", table_id="nope"), grpc.StatusCode.NOT_FOUND)


# -- file columns --------------------------------------------------------------------------

async def upload(channel: grpc.aio.Channel, md: Metadata, name: str, data: bytes) -> str:
    files = file_service_pb2_grpc.FileServiceStub(channel)

    async def parts() -> AsyncIterator[file_service_pb2.UploadFileRequest]:
        yield file_service_pb2.UploadFileRequest(metadata=file_service_pb2.FileMetadata(
            name=name))
        yield file_service_pb2.UploadFileRequest(chunk=data)

    return (await files.UploadFile(parts(), metadata=md)).file.uri


async def test_file_columns_hold_valid_uris_and_pin_their_files(
        stub: Any, md: Metadata, channel: grpc.aio.Channel) -> None:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(buffer, "PNG")
    image_uri = await upload(channel, md, "pic.png", buffer.getvalue())
    text_uri = await upload(channel, md, "notes.txt", b"just text")
    await stub.CreateTable(pb.CreateTableRequest(table_type=ACTION, table_id="t", cols=[
        col("pic", "image"), col("doc", "file")]), metadata=md)
    await import_csv(stub, md, f"pic,doc\n{image_uri},{text_uri}\n")
    row_id = (await list_rows(stub, md)).items[0].id
    for values in ({"pic": text_uri}, {"pic": "file://nope"}, {"doc": "/etc/passwd"}):
        await fails(stub.UpdateRows(pb.UpdateRowsRequest(table_type=ACTION, table_id="t", data={
            row_id: struct(**values)}), metadata=md), grpc.StatusCode.INVALID_ARGUMENT)
    files = file_service_pb2_grpc.FileServiceStub(channel)
    await fails(files.DeleteFile(file_service_pb2.DeleteFileRequest(uri=image_uri), metadata=md),
                grpc.StatusCode.FAILED_PRECONDITION)
    await stub.DeleteRows(pb.DeleteRowsRequest(table_type=ACTION, table_id="t",
                                               row_ids=[row_id]), metadata=md)
    await files.DeleteFile(file_service_pb2.DeleteFileRequest(uri=image_uri), metadata=md)


async def test_imported_rows_are_generated(stub: Any, md: Metadata) -> None:
    await stub.CreateTable(pb.CreateTableRequest(table_type=ACTION, table_id="t", cols=[
        col("q"), col("answer", gen=llm("Reply to ${q}")),
        col("lost", gen=llm("${q}", model="fake/unknown"))]), metadata=md)
    body = "q,lost\n" + "".join(f"question {i},\n" for i in range(150)) + "given,by hand\n"
    reply = await import_csv(stub, md, body, chunk=100, generate=True)
    assert reply.row_count == 151
    assert reply.error_count == 150  # every "lost" cell failed; the given one was kept
    rows = (await list_rows(stub, md, limit=100, order_by="ID", descending=True)).items
    assert rows[0].cells["lost"].value.string_value == "by hand"
    assert rows[0].cells["lost"].status == pb.CELL_STATUS_DONE
    assert all(r.cells["answer"].status == pb.CELL_STATUS_DONE and
               r.cells["answer"].value.string_value for r in rows)
    assert all(r.cells["lost"].status == pb.CELL_STATUS_ERROR for r in rows[1:])
