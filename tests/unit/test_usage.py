"""The daily provider-token meter: a rolling 24-hour window, one upsert per project and hour,
replicas that see each other's spend, nothing lost when a write fails."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest

from rowforge.server.quotas import QuotaExceeded
from rowforge.server.storage.db import Database
from rowforge.server.usage import HOUR_S, NO_METER, UsageMeter


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_window_quota_and_replicas(database_url: str) -> None:
    db = Database(database_url)
    await db.prepare_schema()
    clock = Clock()
    one = UsageMeter(db, 1000, clock=clock, refresh_s=0)
    two = UsageMeter(db, 1000, clock=clock, refresh_s=0)  # another replica
    try:
        await one.admit("p")
        one.record("p", 600)
        assert await one.used("p") == 600  # not written yet: this replica knows
        assert await two.used("p") == 0
        await one.flush()
        assert await two.used("p") == 600
        two.record("p", 450)
        await two.flush()
        with pytest.raises(QuotaExceeded) as refused:
            await one.admit("p")
        assert (refused.value.quota, refused.value.reason) == ("provider_tokens_per_day",
                                                               "QUOTA_EXCEEDED")
        await one.admit("q")  # per project
        clock.now += 23 * HOUR_S
        with pytest.raises(QuotaExceeded):
            await one.admit("p")
        clock.now += 1 * HOUR_S  # the first hour left the window
        await one.admit("p")
        assert await one.used("p") == 0
        await one.prune()
    finally:
        await db.close()


async def test_a_failed_write_keeps_the_counts(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'u.db'}")
    await db.prepare_schema()
    meter = UsageMeter(db, 100)
    meter.record("p", 70)

    @contextlib.asynccontextmanager
    async def down() -> AsyncIterator[None]:
        raise OSError("disk full")
        yield

    try:
        monkeypatch.setattr(db, "write", down)
        with pytest.raises(OSError):
            await meter.flush()
        monkeypatch.undo()
        await meter.flush()  # the 70 tokens are written with the next flush
        assert await UsageMeter(db, 100).used("p") == 70
    finally:
        await db.close()


async def test_off_means_nothing_recorded_or_refused() -> None:
    assert not NO_METER.enabled
    NO_METER.record("p", 10**9)
    await NO_METER.admit("p")
    await NO_METER.flush()
    await NO_METER.stop()
