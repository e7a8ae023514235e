"""Conversation history: turns from earlier rows, trimmed oldest-first to the context."""

from __future__ import annotations

import datetime as dt

from rowforge.fastcore import Template
from rowforge.server.providers import Message, ModelSpec
from rowforge.server.tables.engine.history import conversation, output_reserve, turns
from rowforge.server.tables.model import Cell, CellStatus, Row
from tests.unit.engine_memory import MemoryStore, col, llm, table

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def row(i: int, user: str, ai: str | None, status: CellStatus = CellStatus.DONE) -> Row:
    return Row(id=f"r{i}", update_time=NOW,
               cells={"User": Cell(value=user), "AI": Cell(value=ai, status=status)})


def test_each_earlier_row_is_a_user_turn_and_an_assistant_turn():
    rows = [row(1, "hi", "hello"), row(2, "failed one", None, CellStatus.ERROR),
            row(3, "", "orphan answer")]
    assert turns(rows, "AI", Template("Q: ${User}")) == [
        Message("user", "Q: hi"), Message("assistant", "hello"),
        Message("user", "Q: failed one"),
        Message("user", "Q: "), Message("assistant", "orphan answer")]
    assert turns(rows[:1], "AI", Template("${User}")) == [Message("user", "hi"),
                                                          Message("assistant", "hello")]
    # a column dropped since: no user text, the answer is still history
    assert turns(rows[:1], "AI", Template("${gone}")) == [Message("assistant", "hello")]


def test_output_reserve_leaves_half_the_context_at_least():
    spec = ModelSpec(id="m", route="x", context_length=1000, max_output_tokens=4096)
    assert output_reserve(spec, None) == 500
    assert output_reserve(spec, 100) == 100


async def test_history_is_trimmed_oldest_first_keeping_system_and_current_turn():
    store = MemoryStore()
    schema = table(col("User"), col("AI", gen=llm("")), table_type="chat")
    rows = await store.insert_rows(schema, [{"User": f"message number {i} " + "word " * 20}
                                            for i in range(40)])
    for r in rows:
        await store.write_cells(schema, r.id, {"AI": Cell(value="answer " + "x " * 20)})
    spec = ModelSpec(id="m", route="x", context_length=600, max_output_tokens=100)
    current = Message("user", "the question")
    system = Message("system", "be brief")
    messages = await conversation(store, schema, row_id=rows[-1].id, column="AI",
                                  prompt=Template("${User}"), spec=spec, max_tokens=100,
                                  system=system, current=current)
    assert messages[0] == system and messages[-1] == current
    assert 2 < len(messages) < 2 * 39
    # the newest earlier turns survive: row 38 is the last before the current row
    assert messages[-3].content.startswith("message number 38")
    assert not any(m.content.startswith("message number 0 ") for m in messages)

    first = await conversation(store, schema, row_id=rows[0].id, column="AI",
                               prompt=Template("${User}"), spec=spec, max_tokens=None,
                               system=None, current=current)
    assert first == [current]
