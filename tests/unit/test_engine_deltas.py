"""Coalescing of token deltas: the first at once, the rest in batches, nothing held long."""

from __future__ import annotations

import asyncio

from rowforge.server.tables.engine import CellDelta
from rowforge.server.tables.engine.deltas import DeltaCoalescer


async def test_the_first_delta_goes_out_at_once_and_the_rest_are_batched():
    sent: list[CellDelta] = []
    deltas = DeltaCoalescer(sent.append, "r", "c", interval_s=0.05, max_chars=1000)
    deltas.push("Hel")
    await asyncio.sleep(0)  # next loop iteration
    assert sent == [CellDelta("r", "c", "Hel", 0)]
    for token in ("lo", " wor", "ld"):
        deltas.push(token)
    assert len(sent) == 1
    deltas.close()
    assert sent[1] == CellDelta("r", "c", "lo world", 1)
    deltas.close()
    assert len(sent) == 2


async def test_tokens_arriving_together_share_the_first_message():
    sent: list[CellDelta] = []
    deltas = DeltaCoalescer(sent.append, "r", "c")
    for token in ("All", " at", " once"):
        deltas.push(token)
    await asyncio.sleep(0)
    assert sent == [CellDelta("r", "c", "All at once", 0)]
    deltas.close()
    assert len(sent) == 1


async def test_discarded_text_is_never_sent():
    sent: list[CellDelta] = []
    deltas = DeltaCoalescer(sent.append, "r", "c")
    deltas.push("partial answer of a failed attempt")
    deltas.discard()
    deltas.push("retry")
    deltas.close()
    assert sent == [CellDelta("r", "c", "retry", 0)]


async def test_buffered_text_is_flushed_by_the_timer_when_tokens_stop():
    sent: list[CellDelta] = []
    deltas = DeltaCoalescer(sent.append, "r", "c", interval_s=0.02)
    deltas.push("a")
    await asyncio.sleep(0)
    deltas.push("b")
    await asyncio.sleep(0.06)
    assert [d.text for d in sent] == ["a", "b"]
    deltas.close()


async def test_a_full_buffer_is_flushed_without_waiting():
    sent: list[CellDelta] = []
    deltas = DeltaCoalescer(sent.append, "r", "c", interval_s=10, max_chars=5)
    deltas.push("first")  # a full buffer: no wait, not even for the loop
    for token in ("ab", "cd", "ef"):
        deltas.push(token)
    assert [d.text for d in sent] == ["first", "abcdef"]
    assert [d.index for d in sent] == [0, 1]
    deltas.push("")
    deltas.close()
    assert deltas.emitted == 2


async def test_slow_tokens_each_go_out_once_the_interval_has_passed():
    sent: list[CellDelta] = []
    deltas = DeltaCoalescer(sent.append, "r", "c", interval_s=0.01)
    for token in ("x", "y", "z"):
        deltas.push(token)
        await asyncio.sleep(0.03)
    assert [d.text for d in sent] == ["x", "y", "z"]
    deltas.close()
