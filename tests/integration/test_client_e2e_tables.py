"""The Python client against a real server: tables, columns, rows (streamed and not), paging
past 100 rows, import/export, typed errors with their details; sync and async."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator

import pytest

import rowforge.clients.types as t
from rowforge.clients import AsyncRowForge, RowForge
from rowforge.clients import exceptions as ex
from tests.support.server import ServerProcess

LLM = t.LLMGenConfig(model="rowforge/chat", prompt="Answer briefly: ${question}", max_tokens=40)


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[RowForge]:
    with RowForge(address=server.address) as c:
        yield c


def _qa(table_id: str) -> t.ActionTableSchemaCreate:
    return t.ActionTableSchemaCreate(id=table_id, cols=[
        t.ColumnSchemaCreate(id="question", dtype="str"),
        t.ColumnSchemaCreate(id="n", dtype="int"),
        t.ColumnSchemaCreate(id="answer", dtype="str", gen_config=LLM),
        t.ColumnSchemaCreate(id="words", dtype="str", gen_config=t.PythonGenConfig(
            python_code='row["words"] = str(len(row["answer"].split()))')),
    ])


def test_table_lifecycle_and_columns(client: RowForge) -> None:
    table = client.table.create_action_table(_qa("life"))
    assert [c.id for c in table.cols] == ["ID", "Updated at", "question", "n", "answer", "words"]
    assert table.col("answer").gen_config.prompt == LLM.prompt
    with pytest.raises(ex.TableAlreadyExistsError):
        client.table.create_action_table(_qa("life"))

    client.table.add_columns("action", "life", [t.ColumnSchemaCreate(id="notes")])
    client.table.rename_columns("action", t.ColumnRenameRequest(table_id="life",
                                                                column_map={"notes": "memo"}))
    client.table.reorder_columns("action", "life", ["memo", "question", "n", "answer", "words"])
    table = client.table.update_gen_config("action", "life", {"answer": t.LLMGenConfig(
        model="rowforge/chat", prompt="Other: ${question}")})
    assert [c.id for c in table.cols if not c.system] == ["memo", "question", "n", "answer",
                                                          "words"]
    assert table.col("answer").gen_config.prompt == "Other: ${question}"
    table = client.table.drop_columns("action", t.ColumnDropRequest(table_id="life",
                                                                    column_names=["memo"]))
    assert "memo" not in [c.id for c in table.cols]

    copy = client.table.duplicate_table("action", "life", "life_copy", include_data=False)
    renamed = client.table.rename_table("action", copy.id, "life_renamed")
    assert renamed.id == "life_renamed"
    ids = [x.id for x in client.table.iter_tables("action", search_query="life")]
    assert ids == ["life", "life_renamed"]
    assert client.table.list_tables("action", search_query="life", limit=1).total == 2
    client.table.delete_table("action", "life_renamed")
    with pytest.raises(ex.TableNotFoundError) as info:
        client.table.get_table("action", "life_renamed")
    assert info.value.metadata.get("tableId") == "life_renamed"
    assert client.table.delete_table("action", "life_renamed", missing_ok=True).ok is False


def test_rows_round_trip(client: RowForge) -> None:
    client.table.create_action_table(_qa("rows"))
    response = client.table.add_table_rows("action", t.MultiRowAddRequest(
        table_id="rows", data=[{"question": "What is gRPC?", "n": 1},
                               {"question": "What is HTTP/2?", "n": 2}], stream=False))
    first = response.rows[0]
    assert first.columns["answer"].text and first.columns["answer"].status == "done"
    assert first.columns["words"].text == str(len(first.columns["answer"].text.split()))

    chunks = list(client.table.add_table_rows("action", t.MultiRowAddRequest(
        table_id="rows", data=[{"question": "Why stream?", "n": 3}], stream=True)))
    streamed = "".join(c.text for c in chunks if c.output_column_name == "answer")
    words = "".join(c.text for c in chunks if c.output_column_name == "words")
    row_id = next(c.row_id for c in chunks if c.row_id)
    stored = client.table.get_table_row("action", "rows", row_id)
    assert stored["answer"]["value"] == streamed and stored["words"]["value"] == words
    assert stored["n"] == {"value": 3} and type(stored["n"]["value"]) is int
    assert chunks[-1].event == "completed" and chunks[-1].row_count == 1

    page = client.table.list_table_rows("action", "rows", where='"n" >= 2',
                                        columns=["question", "n"])
    assert page.total == 2 and [r["n"]["value"] for r in page.items] == [2, 3]
    assert set(page.items[0]) == {"ID", "Updated at", "question", "n"}
    found = client.table.list_table_rows("action", "rows", search_query="HTTP")
    assert [r["question"]["value"] for r in found.items] == ["What is HTTP/2?"]

    client.table.update_table_rows("action", t.MultiRowUpdateRequest(
        table_id="rows", data={first.row_id: {"question": "changed"}}))
    assert client.table.get_table_row("action", "rows", first.row_id)["question"]["value"] == (
        "changed")
    regen = client.table.regen_table_rows("action", t.MultiRowRegenRequest(
        table_id="rows", row_ids=[first.row_id], stream=False))
    assert "changed" in regen.rows[0].columns["answer"].text

    deleted = client.table.delete_table_rows("action", t.MultiRowDeleteRequest(
        table_id="rows", row_ids=[first.row_id]))
    assert deleted.count == 1
    with pytest.raises(ex.RowNotFoundError):
        client.table.get_table_row("action", "rows", first.row_id)


def test_paging_past_one_hundred_rows(client: RowForge) -> None:
    client.table.create_action_table(t.ActionTableSchemaCreate(id="many", cols=[
        t.ColumnSchemaCreate(id="k", dtype="int"), t.ColumnSchemaCreate(id="s")]))
    csv = "k,s\n" + "".join(f"{i},text {i}\n" for i in range(250))
    imported = client.table.import_rows("action", "many", io.BytesIO(csv.encode()))
    assert imported.row_count == 250
    keys = [row["k"]["value"] for row in client.table.iter_table_rows("action", "many")]
    assert keys == list(range(250))
    assert len(client.table.list_all_rows("action", "many", where='"k" >= 200')) == 50
    page = client.table.list_table_rows("action", "many", offset=100, limit=100)
    assert page.total == 250 and page.items[0]["k"]["value"] == 100
    second = client.table.list_table_rows("action", "many", page_token=page.next_page_token)
    assert second.items[0]["k"]["value"] == 200
    exported = client.table.export_table_data("action", "many", columns=["k"], where='"k" < 3')
    lines = exported.decode().splitlines()
    assert lines[0] == "ID,Updated at,k" and [x.rsplit(",", 1)[1] for x in lines[1:]] == [
        "0", "1", "2"]


FORMULAS = ["=cmd|' /C calc'!A0", "+SUM(1)", "-2+3", "@A1", "\tx", "\rx", "plain", "a=b"]


def test_export_neutralises_formulas_unless_raw(client: RowForge) -> None:
    """OWASP's CSV-injection rule: a text value a spreadsheet would run gets a leading '."""
    import csv

    client.table.create_action_table(t.ActionTableSchemaCreate(id="formulas", cols=[
        t.ColumnSchemaCreate(id="s"), t.ColumnSchemaCreate(id="n", dtype="int")]))
    client.table.add_table_rows("action", t.MultiRowAddRequest(
        table_id="formulas", data=[{"s": text, "n": -5} for text in FORMULAS], stream=False))

    def fields(data: bytes, delimiter: str = ",") -> list[list[str]]:
        rows = list(csv.reader(io.StringIO(data.decode(), newline=""), delimiter=delimiter))
        return sorted(row[2:] for row in rows[1:])

    safe = fields(client.table.export_table_data("action", "formulas"))
    assert safe == sorted([["'" + f if f[0] in "=+-@\t\r" else f, "-5"] for f in FORMULAS])
    tsv = fields(b"".join(client.table.iter_export("action", "formulas", delimiter="\t")), "\t")
    assert tsv == safe
    raw = fields(client.table.export_table_data("action", "formulas", raw=True))
    assert raw == sorted([f, "-5"] for f in FORMULAS)
    streamed = fields(b"".join(client.table.iter_export("action", "formulas", raw=True)))
    assert streamed == raw


def test_errors_carry_the_servers_details(client: RowForge) -> None:
    with pytest.raises(ex.InvalidArgumentError) as bad:
        client.table.create_action_table(t.ActionTableSchemaCreate(id="bad", cols=[
            t.ColumnSchemaCreate(id="x", dtype="decimal")]))
    assert bad.value.field_violations and bad.value.field_violations[0][0] == "cols[0].dtype"
    assert bad.value.reason == "INVALID_DTYPE"
    with pytest.raises(ex.InvalidWhereError) as where:
        client.table.list_table_rows("action", "many", where='"nope" = 1')
    assert where.value.field_violations[0][0] == "where"
    with pytest.raises(ex.InvalidArgumentError):
        client.table.list_table_rows("action", "many", limit=1000)
    with pytest.raises(ex.ModelNotFoundError):
        client.generate_chat_completions(t.ChatRequest(
            model="no/such-model", messages=[t.ChatEntry.user("hi")], stream=False))
    # Nothing was half-created by the refused schema.
    assert not client.table.list_tables("action", search_query="bad").items


async def test_async_client(server: ServerProcess) -> None:
    async with AsyncRowForge(address=server.address) as client:
        await client.table.create_action_table(_qa("async_qa"))
        results = await asyncio.gather(*[client.table.add_table_rows("action", t.MultiRowAddRequest(
            table_id="async_qa", data=[{"question": f"q{i}", "n": i}], stream=False))
            for i in range(5)])
        assert all(r.rows[0].columns["answer"].text for r in results)
        text = ""
        async for chunk in client.table.add_table_rows("action", t.MultiRowAddRequest(
                table_id="async_qa", data=[{"question": "streamed", "n": 9}], stream=True)):
            if chunk.output_column_name == "answer":
                text += chunk.text
        assert text
        rows = [r async for r in client.table.iter_table_rows("action", "async_qa",
                                                               page_size=2)]
        assert sorted(r["n"]["value"] for r in rows) == [0, 1, 2, 3, 4, 9]
        with pytest.raises(ex.TableNotFoundError):
            await client.table.get_table("chat", "async_qa")
        await client.table.delete_table("action", "async_qa")
