"""StreamAddRows / StreamRegenRows with ``coalesce_events``: the events ready at once travel
as one message's ``batch``, in the same order and with the same content as one event per
message, and grouping never holds a token back from a client streaming one row."""

from __future__ import annotations

import statistics
import time
import uuid
from typing import Any

from rowforge.v1 import table_service_pb2 as pb
from tests.integration.generation_support import (
    ACTION,
    DONE,
    create_table,
    input_col,
    llm_col,
    md,
    python_col,
    stream_add_rows,
    struct,
    stub,
)
from tests.integration.test_table_generation import chain_cols, kinds, row_of

__all__ = ["md", "stub"]  # fixtures


def flatten(messages: list[Any]) -> list[Any]:
    """The events of ``messages`` in order, batches opened (a batch is never nested)."""
    events = []
    for message in messages:
        if message.WhichOneof("event") == "batch":
            assert message.batch.events, "an empty batch"
            for event in message.batch.events:
                assert event.WhichOneof("event") not in ("batch", None)
                events.append(event)
        else:
            events.append(message)
    return events


def check_order(events: list[Any], n: int, columns: tuple[str, ...]) -> None:
    """What a stream of ``n`` rows promises, whatever the grouping: one row_created, deltas
    0, 1, 2 ... then one cell_completed per cell, a row_completed repeating the cells, one
    terminal completed."""
    assert kinds(events).count("completed") == 1 and kinds(events)[-1] == "completed"
    assert events[-1].completed.row_count == n and events[-1].completed.error_count == 0
    created = [e.row_created for e in events if e.WhichOneof("event") == "row_created"]
    assert sorted(c.row_index for c in created) == list(range(n))
    for c in created:
        mine = [e for e in events if row_of(e) == c.row_id]
        assert kinds(mine)[0] == "row_created" and kinds(mine)[-1] == "row_completed"
        for column in columns:
            cell = [e for e in mine if getattr(getattr(e, e.WhichOneof("event")),
                                               "output_column_name", None) == column]
            assert kinds(cell).count("cell_completed") == 1, kinds(cell)
            assert kinds(cell)[-1] == "cell_completed"
            deltas = [e.delta for e in cell if e.WhichOneof("event") == "delta"]
            assert [d.index for d in deltas] == list(range(len(deltas)))
            done = cell[-1].cell_completed.cell
            assert done.status == DONE
            if deltas:
                assert "".join(d.text for d in deltas) == done.text
            assert mine[-1].row_completed.row.columns[column] == done


async def test_coalesced_streams_carry_the_same_events_in_fewer_messages(stub, md):
    cols = [*chain_cols(), python_col("n", 'row["n"] = len(row["a"])', dtype="int")]
    await create_table(stub, md, "t", cols)
    rows = [{"q": f"question {i}"} for i in range(40)]
    plain = await stream_add_rows(stub, md, "t", rows)
    grouped = await stream_add_rows(stub, md, "t", rows, coalesce_events=True)
    assert all(m.WhichOneof("event") != "batch" for m in plain)
    events = flatten(grouped)
    assert any(m.WhichOneof("event") == "batch" for m in grouped)
    assert len(grouped) < len(events) / 4  # the built-in model is fast: events pile up
    # the same events, grouped differently
    assert sorted(kinds(events)) == sorted(kinds(plain))
    check_order(events, len(rows), ("a", "b", "c", "n"))
    check_order(plain, len(rows), ("a", "b", "c", "n"))
    texts = {e.row_completed.row_index: e.row_completed.row.columns["a"].text
             for e in events if e.WhichOneof("event") == "row_completed"}
    assert texts == {e.row_completed.row_index: e.row_completed.row.columns["a"].text
                     for e in plain if e.WhichOneof("event") == "row_completed"}

    ids = [e.row_created.row_id for e in events if e.WhichOneof("event") == "row_created"]
    regen = [m async for m in stub.StreamRegenRows(pb.StreamRegenRowsRequest(
        table_type=ACTION, table_id="t", row_ids=ids,
        regen_strategy=pb.REGEN_STRATEGY_RUN_ALL, coalesce_events=True), metadata=md)]
    assert any(m.WhichOneof("event") == "batch" for m in regen)
    check_order(flatten(regen), len(ids), ("a", "b", "c", "n"))


async def test_a_large_group_is_split_under_the_message_budget(stub, md):
    # 40 rows of ~100 kB cells: ~8 MB of events ready at once, more than one message may
    # carry (a gRPC client accepts 4 MiB by default); the call must not fail for it.
    await create_table(stub, md, "big", [
        input_col("q"), python_col("blob", 'row["blob"] = "x" * 100_000 + row["q"]')])
    messages = await stream_add_rows(stub, md, "big", [{"q": str(i)} for i in range(40)],
                                     coalesce_events=True)
    assert max(m.ByteSize() for m in messages) < 2 << 20
    events = flatten(messages)
    done = [e.cell_completed.cell.text for e in events if e.WhichOneof("event") == "cell_completed"]
    assert sorted(done) == sorted("x" * 100_000 + str(i) for i in range(40))


async def test_a_streamed_row_sees_each_token_as_the_model_sends_it(stub, md, fake_openai):
    """One row, a model that sends a token every 60 ms: each delta reaches the client within
    ~20 ms of the fake sending it, grouped or not (grouping takes only what already waits)."""
    fake_openai.token_delay = 0.06
    try:
        lags: dict[bool, list[float]] = {}
        for coalesce in (False, True):
            marker = uuid.uuid4().hex
            await create_table(stub, md, f"live{int(coalesce)}", [
                input_col("q"), llm_col("a", f"{marker} Answer ${{q}}", model="fake/gpt")])
            arrivals: list[tuple[str, float]] = []
            async for message in stub.StreamAddRows(pb.StreamAddRowsRequest(
                    table_type=ACTION, table_id=f"live{int(coalesce)}",
                    data=[struct({"q": "why is the sky blue"})], coalesce_events=coalesce),
                    metadata=md):
                now = time.monotonic()
                for event in flatten([message]):
                    if event.WhichOneof("event") == "delta":
                        arrivals.append((event.delta.text, now))
            sent = [(piece, at) for prompt, piece, at in list(fake_openai.chunks_sent)
                    if marker in prompt and piece]
            assert len(sent) >= 5
            assert [text for text, _ in arrivals] == [piece for piece, _ in sent]
            lags[coalesce] = [got - at for (_, got), (_, at) in zip(arrivals, sent, strict=True)]
    finally:
        fake_openai.token_delay = 0.0
    for coalesce, measured in lags.items():
        assert min(measured) >= 0
        assert statistics.median(measured) < 0.02, (coalesce, measured)
    # no token waited for the next one (they come 60 ms apart)
    assert max(lags[True]) < 0.05, lags[True]
