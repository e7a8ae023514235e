"""The call log's group commit: one write in flight, the starts that arrive meanwhile share the
next one, each ``started()`` returns only once its count is written, and a failed write fails
only the starts it carried."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest

from rowforge.server.batch.call_log import CallLog


class SlowDb:
    """Just what CallLog uses: ``is_postgres`` and ``write()``; each write takes ``delay``."""

    is_postgres = False

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.writes: list[Counter[str]] = []
        self.fail_next = False
        self.in_flight = 0
        self.most_in_flight = 0

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[Any]:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
            if self.fail_next:
                self.fail_next = False
                raise OSError("disk full")
            yield self
        finally:
            self.in_flight -= 1

    async def execute(self, statement: Any, rows: list[dict[str, Any]]) -> None:
        counts: Counter[str] = Counter()
        for row in rows:
            counts[row["job_id"]] += row["calls"]
        self.writes.append(counts)


async def test_starts_during_a_write_share_the_next_one() -> None:
    db = SlowDb(0.05)
    log = CallLog(db)  # type: ignore[arg-type]
    first = asyncio.ensure_future(log.started("a"))
    await asyncio.sleep(0.01)  # the first write is in flight
    later = [asyncio.ensure_future(log.started(job)) for job in ["a", "b", "a", "b", "b"]]
    await asyncio.sleep(0.02)
    assert not first.done() and not any(t.done() for t in later)  # not written yet
    await asyncio.gather(first, *later)
    assert db.writes == [Counter({"a": 1}), Counter({"a": 2, "b": 3})]
    assert db.most_in_flight == 1


async def test_a_failed_write_fails_only_its_starts() -> None:
    db = SlowDb(0.02)
    log = CallLog(db)  # type: ignore[arg-type]
    db.fail_next = True
    doomed = asyncio.ensure_future(log.started("a"))
    await asyncio.sleep(0.005)
    next_wave = asyncio.ensure_future(log.started("b"))
    with pytest.raises(OSError):
        await doomed
    await next_wave  # written by the following write
    assert db.writes == [Counter({"b": 1})]


async def test_a_start_whose_call_was_not_made_is_taken_back() -> None:
    db = SlowDb(0.01)
    log = CallLog(db)  # type: ignore[arg-type]
    await log.started("a")
    await log.started("a")
    log.not_made("a")  # e.g. cancelled while waiting for a call slot
    await asyncio.sleep(0.05)  # written with the next group commit, nobody waits for it
    assert sum(db.writes, Counter()) == Counter({"a": 1})
    log.not_made("b")
    await log.started("b")  # both in one write: nothing to write at all
    assert sum(db.writes, Counter()) == Counter({"a": 1})


async def test_a_call_counted_before_admission_is_taken_back_if_admission_fails() -> None:
    db = SlowDb(0.01)
    log = CallLog(db)  # type: ignore[arg-type]
    assert await log.admitted("a", lambda: asyncio.sleep(0, result="permit")) == "permit"

    async def refused() -> None:
        raise RuntimeError("no slot")

    with pytest.raises(RuntimeError):
        await log.admitted("a", refused)
    blocked = asyncio.ensure_future(log.admitted("a", lambda: asyncio.sleep(10)))
    await asyncio.sleep(0.05)
    blocked.cancel()  # cancelled while waiting for its slot
    with pytest.raises(asyncio.CancelledError):
        await blocked
    await asyncio.sleep(0.05)
    assert sum(db.writes, Counter()) == Counter({"a": 1})
