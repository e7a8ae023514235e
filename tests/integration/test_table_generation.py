"""AddRows / StreamAddRows / RegenRows / StreamRegenRows over a real server.

The server routes ``fake/gpt`` and ``fake/unknown`` to the fake OpenAI server running in this
test process (``fake_openai``), whose prompt rules (``[[fault:500]]``, ``[[fault:429x2]]``,
``[[fault:timeout]]``) inject provider faults per cell.
"""

from __future__ import annotations

import asyncio
import io
import uuid
from typing import Any

import grpc
import pytest

from rowforge.v1 import table_service_pb2 as pb
from tests.integration.generation_support import (
    ACTION,
    DONE,
    ERROR,
    KNOWLEDGE,
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
    python_col,
    stream_add_rows,
    struct,
    stub,
    upload,
    value,
)
from tests.support.status import fails
from tests.support.waiting import eventually

__all__ = ["md", "stub"]  # fixtures


def chain_cols() -> list[pb.Column]:
    return [input_col("q"), llm_col("a", "Answer ${q}"), llm_col("b", "Shorten ${a}"),
            llm_col("c", "Other ${q}")]


def kinds(messages: list[Any]) -> list[str]:
    return [m.WhichOneof("event") for m in messages]


def row_of(message: Any) -> str:
    """The row id an event is about."""
    kind = message.WhichOneof("event")
    inner = getattr(message, kind)
    if kind == "row_completed":
        return inner.row.row_id
    return getattr(inner, "row_id", "")


# -- AddRows -------------------------------------------------------------------------------

async def test_add_rows_returns_ids_texts_usage_and_stores_the_cells(stub, md):
    await create_table(stub, md, "t", [*chain_cols(),
                                       python_col("words", 'row["words"] = len(row["a"].split())',
                                                  dtype="int")])
    reply = await add_rows(stub, md, "t", [{"q": "What is Python?"}, {"q": "Hello"}])
    assert len(reply.rows) == 2
    first = reply.rows[0]
    assert first.row_id and first.row_id != reply.rows[1].row_id
    assert set(first.columns) == {"a", "b", "c", "words"}
    answer = first.columns["a"]
    assert answer.status == DONE and "What is Python" in answer.text
    assert answer.usage.completion_tokens > 0 and answer.usage.total_tokens > 0
    assert first.columns["words"].value.number_value == len(answer.text.split())
    assert "Answer Hello" in reply.rows[1].columns["a"].text
    stored = await get_row(stub, md, "t", first.row_id)
    assert stored.cells["a"].status == DONE and value(stored.cells["a"]) == answer.text
    assert value(stored.cells["q"]) == "What is Python?"
    assert stored.cells["words"].status == DONE


async def test_stream_add_rows_events_are_ordered(stub, md):
    await create_table(stub, md, "t", chain_cols())
    messages = await stream_add_rows(stub, md, "t", [{"q": f"question {i}"} for i in range(3)])
    assert kinds(messages).count("completed") == 1 and kinds(messages)[-1] == "completed"
    assert messages[-1].completed.row_count == 3 and messages[-1].completed.error_count == 0
    created = [m.row_created for m in messages if m.WhichOneof("event") == "row_created"]
    assert [c.row_index for c in created] == [0, 1, 2]
    for c in created:
        mine = [m for m in messages if row_of(m) == c.row_id]
        assert kinds(mine)[0] == "row_created" and kinds(mine)[-1] == "row_completed"
        assert mine[-1].row_completed.row_index == c.row_index
        for column in ("a", "b", "c"):
            cell = [m for m in mine if getattr(getattr(m, m.WhichOneof("event")),
                                               "output_column_name", None) == column]
            assert kinds(cell)[-1] == "cell_completed" and kinds(cell).count("cell_completed") == 1
            deltas = [m.delta for m in cell if m.WhichOneof("event") == "delta"]
            assert [d.index for d in deltas] == list(range(len(deltas))) and deltas
            done = cell[-1].cell_completed.cell
            assert "".join(d.text for d in deltas) == done.text
            assert mine[-1].row_completed.row.columns[column] == done
        # b reads a: its first delta comes after a is complete
        events = kinds(mine)
        a_done = next(i for i, m in enumerate(mine) if m.WhichOneof("event") == "cell_completed"
                      and m.cell_completed.output_column_name == "a")
        b_first = next(i for i, m in enumerate(mine) if m.WhichOneof("event") == "delta"
                       and m.delta.output_column_name == "b")
        assert a_done < b_first, events


async def test_concurrent_false_generates_rows_in_order(stub, md):
    await create_table(stub, md, "t", chain_cols())
    messages = await stream_add_rows(stub, md, "t", [{"q": f"q{i}"} for i in range(3)],
                                     concurrent=False)
    completed = [m.row_completed.row_index for m in messages
                 if m.WhichOneof("event") == "row_completed"]
    assert completed == [0, 1, 2]
    first_delta_rows = []
    for m in messages:
        if m.WhichOneof("event") == "delta" and m.delta.row_id not in first_delta_rows:
            first_delta_rows.append(m.delta.row_id)
    created = [m.row_created.row_id for m in messages if m.WhichOneof("event") == "row_created"]
    assert first_delta_rows == created


# -- bad requests --------------------------------------------------------------------------

@pytest.mark.parametrize("streamed", [False, True])
async def test_bad_requests_get_clear_statuses_and_write_nothing(stub, md, streamed):
    await create_table(stub, md, "t", chain_cols())
    other = (("x-project-id", f"other-{uuid.uuid4().hex[:8]}"),)

    def call(rows: list[dict[str, Any]], table_id: str = "t", metadata: Any = md,
             **kw: Any) -> Any:
        request_type = pb.StreamAddRowsRequest if streamed else pb.AddRowsRequest
        method = stub.StreamAddRows if streamed else stub.AddRows
        return method(request_type(table_type=kw.pop("table_type", ACTION), table_id=table_id,
                                   data=[struct(r) for r in rows]), metadata=metadata)

    _, _, fields = await fails(call([{"q": "x"}] * 101), grpc.StatusCode.INVALID_ARGUMENT)
    assert "at most 100 rows" in fields["data"]
    _, _, fields = await fails(call([]), grpc.StatusCode.INVALID_ARGUMENT)
    assert "at least one row" in fields["data"]
    reason, _, _ = await fails(call([{"q": "x"}], table_id="nope"), grpc.StatusCode.NOT_FOUND)
    assert reason == "TABLE_NOT_FOUND"
    await fails(call([{"q": "x"}], metadata=other), grpc.StatusCode.NOT_FOUND)
    await fails(call([{"q": "x"}], table_type=0),
                grpc.StatusCode.INVALID_ARGUMENT)
    _, _, fields = await fails(call([{"q": "fine"}, {"q": "x", "zzz": 1}]),
                               grpc.StatusCode.INVALID_ARGUMENT)
    assert any(f.startswith("data[1]") and "zzz" in f for f in fields), fields
    _, _, fields = await fails(call([{"q": 12}]), grpc.StatusCode.INVALID_ARGUMENT)
    assert any(f.startswith("data[0]") for f in fields), fields
    assert (await list_rows(stub, md, "t")).total == 0


# -- failures, retries ---------------------------------------------------------------------

async def test_a_failing_llm_cell_fails_only_its_dependants(stub, md):
    await create_table(stub, md, "t", [
        input_col("q"),
        llm_col("bad", "[[fault:500]] ${q}", model="fake/gpt"),
        llm_col("lost", "fake/unknown says ${q}", model="fake/unknown"),
        llm_col("fine", "Other ${q}", model="fake/gpt"),
        llm_col("after", "${bad}"),
        python_col("tail", 'row["tail"] = "ok"'),
    ])
    reply = await add_rows(stub, md, "t", [{"q": "hello"}])
    cols = reply.rows[0].columns
    assert cols["bad"].status == ERROR and "fake/gpt" in cols["bad"].error
    assert cols["lost"].status == ERROR and "fake/unknown" in cols["lost"].error
    assert cols["fine"].status == DONE and cols["fine"].text
    assert cols["after"].status == ERROR and cols["after"].error == "upstream column 'bad' failed"
    assert cols["tail"].status == ERROR and "upstream column" in cols["tail"].error
    row = await get_row(stub, md, "t", reply.rows[0].row_id)
    assert row.cells["after"].error == "upstream column 'bad' failed"
    assert row.cells["fine"].status == DONE


async def test_transient_429s_are_retried(stub, md, fake_openai):
    marker = uuid.uuid4().hex
    await create_table(stub, md, "t", [
        input_col("q"), llm_col("a", f"{marker} [[fault:429x2,retry_after=0.05]] ${{q}}",
                                model="fake/gpt")])
    messages = await stream_add_rows(stub, md, "t", [{"q": "hi"}])
    done = [m.cell_completed.cell for m in messages if m.WhichOneof("event") == "cell_completed"]
    assert done[0].status == DONE, done[0].error
    seen = [r for r in fake_openai.requests_to("/v1/chat/completions") if marker in str(r.json)]
    assert len(seen) == 3


# -- cancellation and deadlines ------------------------------------------------------------

def assert_final(row: pb.Row, columns: list[str]) -> dict[str, int]:
    statuses = {c: row.cells[c].status for c in columns}
    assert not {PENDING, RUNNING} & set(statuses.values()), statuses
    return statuses


async def test_cancelling_a_stream_cancels_generation_and_leaves_final_cells(stub, md,
                                                                           fake_openai):
    marker = uuid.uuid4().hex
    await create_table(stub, md, "t", [
        input_col("q"), llm_col("slow", f"{marker} [[fault:timeout]] ${{q}}", model="fake/gpt"),
        llm_col("quick", "Quick ${q}"), llm_col("after", "${slow}")])
    call = stub.StreamAddRows(pb.StreamAddRowsRequest(
        table_type=ACTION, table_id="t", data=[struct({"q": f"q{i}"}) for i in range(3)]),
        metadata=md)
    row_ids: list[str] = []

    def hanging() -> int:
        return sum(1 for r in list(fake_openai.requests_to("/v1/chat/completions"))
                   if marker in str(r.json))

    async for message in call:
        if message.WhichOneof("event") == "row_created":
            row_ids.append(message.row_created.row_id)
        if len(row_ids) == 3 and message.WhichOneof("event") == "cell_completed":
            break
    await eventually(lambda: hanging() == 3)
    assert fake_openai.in_flight >= 3
    call.cancel()
    # the upstream requests are closed, long before the fake's 30 s hang
    await eventually(lambda: fake_openai.in_flight == 0, timeout=10)
    for row_id in row_ids:
        row = await get_row(stub, md, "t", row_id)
        statuses = assert_final(row, ["slow", "quick", "after"])
        assert statuses["slow"] == SKIPPED and row.cells["slow"].error == "generation cancelled"
        assert statuses["after"] == SKIPPED
        assert statuses["quick"] in (DONE, SKIPPED)


async def test_a_deadline_cancels_the_provider_call(stub, md, fake_openai):
    marker = uuid.uuid4().hex
    await create_table(stub, md, "t", [
        input_col("q"), llm_col("slow", f"{marker} [[fault:timeout]] ${{q}}", model="fake/gpt")])
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.AddRows(pb.AddRowsRequest(table_type=ACTION, table_id="t",
                                             data=[struct({"q": "x"})]), metadata=md, timeout=1.5)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await eventually(lambda: fake_openai.in_flight == 0, timeout=10)
    assert loop.time() - start < 10
    rows = await list_rows(stub, md, "t")
    assert rows.total == 1
    assert_final(rows.items[0], ["slow"])


# -- regeneration --------------------------------------------------------------------------

async def test_regen_rows_strategies(stub, md):
    await create_table(stub, md, "t", chain_cols())
    reply = await add_rows(stub, md, "t", [{"q": "apples"}, {"q": "pears"}])
    ids = [r.row_id for r in reply.rows]
    await stub.UpdateRows(pb.UpdateRowsRequest(table_type=ACTION, table_id="t", data={
        ids[0]: struct({"q": "bananas"})}), metadata=md)

    regen = await stub.RegenRows(pb.RegenRowsRequest(
        table_type=ACTION, table_id="t", row_ids=ids[:1],
        regen_strategy=pb.REGEN_STRATEGY_RUN_SELECTED, output_column_id="c"), metadata=md)
    cols = regen.rows[0].columns
    assert "bananas" in cols["c"].text and cols["c"].status == DONE
    assert cols["a"].status == SKIPPED and "apples" in cols["a"].text  # not selected
    row = await get_row(stub, md, "t", ids[0])
    assert "apples" in value(row.cells["a"]) and "bananas" in value(row.cells["c"])

    messages = [m async for m in stub.StreamRegenRows(pb.StreamRegenRowsRequest(
        table_type=ACTION, table_id="t", row_ids=ids,
        regen_strategy=pb.REGEN_STRATEGY_RUN_BEFORE, output_column_id="b"), metadata=md)]
    assert kinds(messages)[-1] == "completed" and messages[-1].completed.row_count == 2
    assert [m.row_created.row_id for m in messages
            if m.WhichOneof("event") == "row_created"] == ids
    regenerated = {(m.cell_completed.row_id, m.cell_completed.output_column_name)
                   for m in messages if m.WhichOneof("event") == "cell_completed"}
    assert regenerated == {(i, c) for i in ids for c in ("a", "b")}
    row = await get_row(stub, md, "t", ids[0])
    assert "bananas" in value(row.cells["a"])

    regen = await stub.RegenRows(pb.RegenRowsRequest(table_type=ACTION, table_id="t",
                                                     row_ids=ids[1:],
                                                     regen_strategy=pb.REGEN_STRATEGY_RUN_ALL),
                                 metadata=md)
    assert {c.status for c in regen.rows[0].columns.values()} == {DONE}


async def test_regen_rows_errors(stub, md):
    await create_table(stub, md, "t", chain_cols())
    reply = await add_rows(stub, md, "t", [{"q": "x"}])
    row_id = reply.rows[0].row_id

    def regen(**kw: Any) -> Any:
        kw.setdefault("row_ids", [row_id])
        kw.setdefault("regen_strategy", pb.REGEN_STRATEGY_RUN_ALL)
        return stub.RegenRows(pb.RegenRowsRequest(table_type=ACTION, table_id="t", **kw),
                              metadata=md)

    def stream(**kw: Any) -> Any:
        kw.setdefault("row_ids", [row_id])
        kw.setdefault("regen_strategy", pb.REGEN_STRATEGY_RUN_ALL)
        return stub.StreamRegenRows(pb.StreamRegenRowsRequest(table_type=ACTION, table_id="t",
                                                              **kw), metadata=md)

    for call in (regen, stream):
        reason, _, _ = await fails(call(row_ids=[row_id, "0000-missing"]),
                                   grpc.StatusCode.NOT_FOUND)
        assert reason == "ROW_NOT_FOUND"
        _, _, fields = await fails(call(row_ids=[]), grpc.StatusCode.INVALID_ARGUMENT)
        assert "row_ids" in fields
        _, _, fields = await fails(call(row_ids=[row_id] * 101), grpc.StatusCode.INVALID_ARGUMENT)
        assert "at most 100" in fields["row_ids"]
        _, _, fields = await fails(call(regen_strategy=pb.REGEN_STRATEGY_RUN_AFTER,
                                        output_column_id="q"), grpc.StatusCode.INVALID_ARGUMENT)
        assert "input column" in fields["output_column_id"]
        _, _, fields = await fails(call(regen_strategy=pb.REGEN_STRATEGY_RUN_SELECTED,
                                        output_column_id="zzz"), grpc.StatusCode.INVALID_ARGUMENT)
        assert "unknown column" in fields["output_column_id"]
        _, _, fields = await fails(call(regen_strategy=pb.REGEN_STRATEGY_RUN_SELECTED),
                                   grpc.StatusCode.INVALID_ARGUMENT)
        assert "output_column_id" in fields
        # The zero value is "unspecified", not a silent RUN_ALL.
        reason, _, fields = await fails(call(regen_strategy=pb.REGEN_STRATEGY_UNSPECIFIED),
                                        grpc.StatusCode.INVALID_ARGUMENT)
        assert reason == "INVALID_REGEN_STRATEGY" and "is required" in fields["regen_strategy"]
    other = (("x-project-id", f"other-{uuid.uuid4().hex[:8]}"),)
    await fails(stub.RegenRows(pb.RegenRowsRequest(table_type=ACTION, table_id="t",
                                                   row_ids=[row_id],
                                                   regen_strategy=pb.REGEN_STRATEGY_RUN_ALL),
                               metadata=other),
                grpc.StatusCode.NOT_FOUND)


# -- other paths into the engine ----------------------------------------------------------

async def test_rag_columns_retrieve_through_the_knowledge_search(stub, md):
    # The server wires knowledge's retriever into the engine (without one the cell says "RAG
    # not available": see the engine's unit tests). An empty knowledge table gives no
    # chunks, not an error.
    await create_table(stub, md, "kb", [], table_type=KNOWLEDGE)
    await create_table(stub, md, "t", [
        input_col("q"),
        pb.Column(id="a", dtype="str", gen_config=pb.GenConfig(llm=pb.LLMGenConfig(
            prompt="${q}", rag_params=pb.RAGParams(table_id="kb", k=2)))),
        llm_col("plain", "${q}")])
    reply = await add_rows(stub, md, "t", [{"q": "what?"}])
    cols = reply.rows[0].columns
    assert cols["a"].status == DONE, cols["a"].error
    assert cols["a"].references.table_id == "kb" and not cols["a"].references.chunks
    assert cols["plain"].status == DONE and not cols["plain"].HasField("references")


async def test_imported_rows_are_generated_by_the_engine(stub, md):
    await create_table(stub, md, "t", chain_cols())

    def requests() -> Any:
        yield pb.ImportRowsRequest(metadata=pb.ImportRowsMetadata(
            table_type=ACTION, table_id="t", format=pb.DELIMITED_FORMAT_CSV, generate=True))
        yield pb.ImportRowsRequest(chunk=b"q\nfirst question\nsecond question\n")

    reply = await stub.ImportRows(requests(), metadata=md)
    assert reply.row_count == 2 and reply.error_count == 0
    rows = await list_rows(stub, md, "t")
    assert [value(r.cells["q"]) for r in rows.items] == ["first question", "second question"]
    for row in rows.items:
        assert {row.cells[c].status for c in ("a", "b", "c")} == {DONE}
        assert value(row.cells["q"]) in value(row.cells["a"])


# -- attachments ---------------------------------------------------------------------------

def png_bytes(size: tuple[int, int] = (8, 6), color: tuple[int, int, int] = (200, 30, 30)
              ) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="PNG")
    return out.getvalue()


async def test_image_columns_reach_multimodal_models_as_content_parts(stub, md, channel,
                                                                     fake_openai):
    pytest.importorskip("PIL", reason="Pillow is needed to build the test image")
    image = png_bytes()
    uri = await upload(channel, md, "photo.png", image, "image/png")
    marker = uuid.uuid4().hex
    await create_table(stub, md, "t", [
        input_col("photo", "image"), input_col("q"),
        llm_col("builtin", "Describe ${photo}: ${q}"),
        llm_col("remote", f"{marker} Describe the image. ${{q}}\n${{photo}}", model="fake/gpt")])
    reply = await add_rows(stub, md, "t", [{"photo": uri, "q": "what is it?"}])
    cols = reply.rows[0].columns
    assert cols["builtin"].text.startswith(f"I received an image (image/png, {len(image)} bytes).")
    assert cols["remote"].status == DONE, cols["remote"].error
    assert cols["remote"].text.startswith(f"I received an image (image/png, {len(image)} bytes)")
    [request] = [r for r in fake_openai.requests_to("/v1/chat/completions")
                 if marker in str(r.json)]
    user = request.json["messages"][-1]
    parts = {p["type"]: p for p in user["content"]}
    assert marker in parts["text"]["text"]
    assert parts["image_url"]["image_url"]["url"].startswith("data:image/png;base64,")
