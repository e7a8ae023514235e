"""Provider tokens per project over the last 24 hours, for the
``quota_provider_tokens_per_day`` quota.

Every model call of a project (table cells, direct calls, batch requests) is admitted only
while the project's tokens of the last 24 hours are under the quota; its usage is added once
it returns. Additions are kept in memory and written once a second (one upsert per project and
hour); totals are re-read from the database at most every ``refresh_s``, so replicas see each
other's spend within seconds. Like the other quotas it bounds spend, it is not a transactional
counter: calls already admitted when the quota is reached finish and are counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from rowforge.server.quotas import QuotaExceeded
from rowforge.server.storage.db import Database
from rowforge.server.storage.usage_tables import provider_usage

log = logging.getLogger("rowforge.usage")
HOUR_S = 3600
WINDOW_HOURS = 24


class UsageMeter:
    """Admits and counts the model calls of each project against a daily token quota.

    Args:
        db: Where the hourly totals live (shared by replicas).
        tokens_per_day: The quota (0: none; nothing is recorded then).
        clock: Seconds since the epoch (tests pass a fake one).
    """

    def __init__(self, db: Database | None, tokens_per_day: int, *,
                 clock: Callable[[], float] = time.time, flush_s: float = 1.0,
                 refresh_s: float = 5.0) -> None:
        self.db = db
        self.limit = tokens_per_day
        self.clock = clock
        self.flush_s = flush_s
        self.refresh_s = refresh_s
        self._pending: Counter[tuple[str, int]] = Counter()
        #: project -> (read at, tokens in the window as the database said then)
        self._stored: dict[str, tuple[float, int]] = {}
        self._task: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        return self.limit > 0 and self.db is not None

    async def admit(self, project_id: str) -> None:
        """Let a call of ``project_id`` start, or refuse it.

        Raises:
            QuotaExceeded: the project used its ``provider_tokens_per_day`` in the last 24 h.
        """
        if not self.enabled:
            return
        used = await self.used(project_id)
        if used >= self.limit:
            raise QuotaExceeded("provider_tokens_per_day", project_id, self.limit, used, 0,
                                "tokens")

    def record(self, project_id: str, tokens: int) -> None:
        """Count the tokens of a call that returned (written within ``flush_s``)."""
        if self.enabled and tokens > 0:
            self._pending[(project_id, int(self.clock() // HOUR_S))] += tokens

    async def used(self, project_id: str) -> int:
        """Tokens of the last 24 hours: the database's total (re-read every ``refresh_s``)
        plus what this replica has not written yet."""
        now = self.clock()
        stored = self._stored.get(project_id)
        if stored is None or now - stored[0] >= self.refresh_s:
            stored = (now, await self._read(project_id, now))
            self._stored[project_id] = stored
        first = int(now // HOUR_S) - WINDOW_HOURS + 1
        pending = sum(n for (project, hour), n in self._pending.items()
                      if project == project_id and hour >= first)
        return stored[1] + pending

    async def _read(self, project_id: str, now: float) -> int:
        assert self.db is not None
        first = int(now // HOUR_S) - WINDOW_HOURS + 1
        query = sa.select(sa.func.coalesce(sa.func.sum(provider_usage.c.tokens), 0)).where(
            provider_usage.c.project_id == project_id, provider_usage.c.hour >= first)
        async with self.db.read() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def flush(self) -> None:
        """Write what was recorded (the totals cached for those projects are dropped)."""
        pending, self._pending = self._pending, Counter()
        if not pending or self.db is None:
            return
        rows = [{"project_id": p, "hour": h, "tokens": n} for (p, h), n in pending.items()]
        dialect = postgresql if self.db.is_postgres else sqlite
        insert = dialect.insert(provider_usage).values(rows)
        upsert = insert.on_conflict_do_update(
            index_elements=[provider_usage.c.project_id, provider_usage.c.hour],
            set_={"tokens": provider_usage.c.tokens + insert.excluded.tokens})
        try:
            async with self.db.write() as conn:
                await conn.execute(upsert)
        except BaseException:
            self._pending.update(pending)  # written with the next flush
            raise
        for project_id, _ in pending:
            self._stored.pop(project_id, None)

    async def start(self) -> None:
        if self.enabled and self._task is None:
            self._task = asyncio.create_task(self._flush_every(), name="usage-flush")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.enabled:
            await self.flush()

    async def prune(self) -> None:
        """Drop hours older than the window (called with the flushes, now and then)."""
        first = int(self.clock() // HOUR_S) - WINDOW_HOURS + 1
        if self.db is None:
            return
        async with self.db.write() as conn:
            await conn.execute(sa.delete(provider_usage).where(provider_usage.c.hour < first))

    async def _flush_every(self) -> None:
        flushes = 0
        while True:
            await asyncio.sleep(self.flush_s)
            try:
                await self.flush()
                flushes += 1
                if flushes % 3600 == 1:
                    await self.prune()
            except Exception:
                log.warning("could not write provider usage; retrying", exc_info=True)


#: The meter of a server without the quota: admits everything, records nothing.
NO_METER = UsageMeter(None, 0)
