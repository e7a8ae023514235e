"""StreamEncoder: engine events as StreamAddRows / StreamRegenRows messages, built in place,
each cell's completion built once and repeated in its row's completion."""

from __future__ import annotations

import pytest
from google.protobuf import struct_pb2

from rowforge.server.services.table_generation import StreamEncoder
from rowforge.server.tables.engine import (
    CellCompleted,
    CellDelta,
    CellReferences,
    Completed,
    RowCompleted,
    RowCreated,
    RowResult,
)
from rowforge.server.tables.model import (
    Cell,
    CellStatus,
    CellUsage,
    Chunk,
    ColumnSchema,
    EmbedGenConfig,
    LLMGenConfig,
    References,
    TableSchema,
)
from rowforge.v1 import table_service_pb2 as pb

SCHEMA = TableSchema("p", "knowledge", "kb", columns=(
    ColumnSchema("q", storage_name="c_1"),
    ColumnSchema("a", gen_config=LLMGenConfig(prompt="${q}"), storage_name="c_2"),
    ColumnSchema("n", "int", gen_config=LLMGenConfig(prompt="${q}"), storage_name="c_3"),
    ColumnSchema("v", "embedding", gen_config=EmbedGenConfig("rowforge/embed", "q"),
                 storage_name="c_4")), storage_id="ut_x")


def test_every_event_kind_becomes_its_message() -> None:
    encode = StreamEncoder(pb.StreamAddRowsResponse, SCHEMA).encode
    refs = References("kb", "q?", (Chunk("r9", "T", "text", 3, "file://f", 0.5),))
    messages = [encode(e) for e in (
        RowCreated(4, "r1"), CellReferences("r1", "a", refs), CellDelta("r1", "a", "He", 0),
        CellCompleted("r1", "a", Cell("Hello", usage=CellUsage(3, 2))), Completed(5, 1))]
    assert [m.WhichOneof("event") for m in messages] == [
        "row_created", "references", "delta", "cell_completed", "completed"]
    assert messages[0].row_created == pb.RowCreated(row_index=4, row_id="r1")
    assert messages[1].references.references.chunks[0].page == 3
    assert messages[2].delta == pb.CellDelta(row_id="r1", output_column_name="a", text="He",
                                             index=0)
    cell = messages[3].cell_completed.cell
    assert (cell.text, cell.value.string_value, cell.status) == ("Hello", "Hello",
                                                                 pb.CELL_STATUS_DONE)
    assert (cell.usage.prompt_tokens, cell.usage.completion_tokens, cell.usage.total_tokens) \
        == (3, 2, 5)
    assert messages[4].completed == pb.RowsCompleted(row_count=5, error_count=1)
    with pytest.raises(TypeError):
        encode(object())  # type: ignore[arg-type]


def test_a_row_completion_repeats_its_cells_completions() -> None:
    encoder = StreamEncoder(pb.StreamRegenRowsResponse, SCHEMA)
    answer = Cell("Hi", usage=CellUsage(1, 1))
    failed = Cell(None, CellStatus.ERROR, "upstream column 'a' failed")
    first = encoder.encode(CellCompleted("r1", "a", answer)).cell_completed.cell
    encoder.encode(CellCompleted("r1", "n", failed))
    # A different cell for "n" than the one completed (e.g. marked later): encoded anew.
    later = Cell(7, CellStatus.DONE)
    row = encoder.encode(RowCompleted(0, RowResult("r1", {"a": answer, "n": later,
                                                          "v": Cell([0.5, 0.25])})))
    columns = row.row_completed.row.columns
    assert row.row_completed.row.row_id == "r1" and columns["a"] == first
    assert columns["n"].status == pb.CELL_STATUS_DONE and columns["n"].value.number_value == 7
    assert columns["n"].text == "7" and not columns["n"].error
    # Embedding vectors stay in the table.
    assert columns["v"].value.WhichOneof("kind") == "null_value" and columns["v"].text == ""
    assert columns["v"].status == pb.CELL_STATUS_DONE


def test_values_of_every_type_are_sent_typed() -> None:
    encode = StreamEncoder(pb.StreamAddRowsResponse, SCHEMA).encode
    for value, kind in ((None, "null_value"), (True, "bool_value"), (2.5, "number_value"),
                        ("s", "string_value"), ([1, "x"], "list_value"),
                        ({"k": 1}, "struct_value")):
        cell = encode(CellCompleted("r", "a", Cell(value))).cell_completed.cell
        assert cell.value.WhichOneof("kind") == kind
    nested = encode(CellCompleted("r", "a", Cell({"k": [1]}))).cell_completed.cell.value
    expected = struct_pb2.Value()
    expected.struct_value.update({"k": [1]})
    assert nested == expected


def test_a_group_is_one_batch_message_of_the_same_events() -> None:
    events = [RowCreated(0, "r1"), CellDelta("r1", "a", "Hel", 0), CellDelta("r1", "a", "lo", 1),
              Completed(1, 0)]
    single = StreamEncoder(pb.StreamAddRowsResponse, SCHEMA)
    one_by_one = [single.encode(e) for e in events]
    grouped = StreamEncoder(pb.StreamRegenRowsResponse, SCHEMA)
    assert [m.WhichOneof("event") for m in grouped.encode_group(events[:1])] == ["row_created"]
    [message] = grouped.encode_group(events)
    assert message.WhichOneof("event") == "batch"
    assert [e.SerializeToString() for e in message.batch.events] == \
        [m.SerializeToString() for m in one_by_one]


def test_a_group_over_the_byte_budget_is_split(monkeypatch: pytest.MonkeyPatch) -> None:
    from rowforge.server.services import table_generation

    monkeypatch.setattr(table_generation, "GROUP_BYTES", 100)
    events = [CellDelta("r1", "a", "x" * 60, i) for i in range(5)]
    messages = list(StreamEncoder(pb.StreamAddRowsResponse, SCHEMA).encode_group(events))
    assert [len(m.batch.events) for m in messages] == [2, 2, 1]
    assert [e.delta.index for m in messages for e in m.batch.events] == list(range(5))


async def test_events_group_only_what_already_waits() -> None:
    import asyncio

    from rowforge.server.services.table_generation import _events

    async def run(sink):  # type: ignore[no-untyped-def]
        for i in range(3):
            sink(i)
        await asyncio.sleep(0.01)  # the consumer takes 0, 1, 2 meanwhile
        sink(3)
        await asyncio.sleep(0.01)
        sink(4)
        sink(5)

    assert [g async for g in _events(run, coalesce=True)] == [[0, 1, 2], [3], [4, 5]]
    assert [g async for g in _events(run)] == [[i] for i in range(6)]

    async def failing(sink):  # type: ignore[no-untyped-def]
        sink("a")
        raise ValueError("engine failed")

    got = []
    with pytest.raises(ValueError, match="engine failed"):
        async for group in _events(failing, coalesce=True):
            got.append(group)
    assert got == [["a"]]
