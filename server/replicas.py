"""Replica liveness: every server registers in ``rf_replicas`` and renews a lease; a replica
whose lease ran out is dead, and one live replica finishes its orphaned work.

What a dead replica leaves behind, and who finishes it (the ``take_over`` callbacks the
composition root passes, ``server/app.py``):

* table cells it was generating (PENDING/RUNNING states name their replica): ERROR
  "interrupted", as after a crash of a single server;
* batch requests it had leased: given back, due at once, to whichever worker claims them
  first (the batch queue's own leases would also expire after ``batch_lease_s``; this is
  only sooner);
* knowledge indexes need nothing: each replica's indexes are derived caches that catch up
  from the shared change feed, so no ingest is owned by one replica.

Taking over is claimed in the database (the row's lease is extended in the name of the
replica recovering it, then the row is deleted), so one replica does it; if that one dies
too, the lease runs out again and another takes over. Every step is idempotent.

A replica started with the id of a dead one (a container's ``<host>-<pid>`` is often the same
on every start) takes its own previous run's work over before it starts any new work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Sequence

import sqlalchemy as sa

from rowforge.server.storage.db import Database
from rowforge.server.storage.replica_tables import replicas as replicas_table

log = logging.getLogger("rowforge.replicas")

TakeOver = Callable[[str], Awaitable[object]]
"""``(dead replica id) -> anything``: finishes one kind of the dead replica's work."""

R = replicas_table.c


class Replicas:
    """This replica's registration and lease, and the watch over the others.

    Args:
        db: The database the replicas share.
        replica_id: This replica's id (its batch lease owner name, and the owner named in the
            cells it generates).
        lease_s: A replica silent this long is dead. Renewed every third of it.
        take_over: Called with a dead replica's id, in order; each must be idempotent.
    """

    def __init__(self, db: Database, replica_id: str, *, lease_s: float = 15.0,
                 take_over: Sequence[TakeOver] = ()) -> None:
        self.db = db
        self.id = replica_id
        self.lease_s = lease_s
        self.take_over = list(take_over)
        self._task: asyncio.Task[None] | None = None
        #: Ids of the replicas this one took over (for logs and tests).
        self.recovered: list[str] = []

    async def start(self) -> None:
        """Register (taking over a previous run with this id first), then keep the lease."""
        now = time.time()
        async with self.db.write() as conn:
            previous = await conn.scalar(sa.select(R.id).where(R.id == self.id))
        if previous is not None:
            await self._recover(self.id)
        async with self.db.write() as conn:
            await conn.execute(replicas_table.delete().where(R.id == self.id))
            await conn.execute(replicas_table.insert().values(
                id=self.id, host=socket.gethostname()[:255], pid=os.getpid(), started_at=now,
                heartbeat_at=now, lease_until=now + self.lease_s, recovered_by=None))
        self._task = asyncio.create_task(self._run(), name="rowforge-replica-lease")

    async def stop(self) -> None:
        """Stop renewing, finish what this replica leaves unfinished (call once its engine
        and batch worker stopped: whatever is still PENDING/RUNNING in its name will never
        be finished), and unregister."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            for take_over in self.take_over:
                await take_over(self.id)
            async with self.db.write() as conn:
                await conn.execute(replicas_table.delete().where(R.id == self.id))
        except Exception:
            log.warning("could not unregister this replica (its lease will run out)",
                        exc_info=True)

    async def _run(self) -> None:
        every = self.lease_s / 3
        while True:
            await asyncio.sleep(every)
            try:
                await self.heartbeat()
                await self.reap()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("replica lease: database error; retrying in %.1f s", every)

    async def heartbeat(self) -> None:
        """Renew this replica's lease (re-registering if others took it for dead)."""
        now = time.time()
        async with self.db.write() as conn:
            updated = (await conn.execute(replicas_table.update().where(R.id == self.id).values(
                heartbeat_at=now, lease_until=now + self.lease_s))).rowcount
            if not updated:
                log.error("this replica's lease had run out and others took its work over "
                          "(cells it was generating were marked interrupted); registering "
                          "again")
                await conn.execute(replicas_table.insert().values(
                    id=self.id, host=socket.gethostname()[:255], pid=os.getpid(),
                    started_at=now, heartbeat_at=now, lease_until=now + self.lease_s,
                    recovered_by=None))

    async def live(self) -> list[str]:
        """Ids of the replicas whose lease holds."""
        async with self.db.read() as conn:
            return list((await conn.scalars(sa.select(R.id).where(
                R.lease_until >= time.time(), R.recovered_by.is_(None)).order_by(R.id))).all())

    async def reap(self) -> list[str]:
        """Take over every replica whose lease ran out; returns their ids."""
        now = time.time()
        async with self.db.read() as conn:
            dead = list((await conn.scalars(sa.select(R.id).where(
                R.lease_until < now, R.id != self.id))).all())
        taken = []
        for replica_id in dead:
            # Claim the recovery: one replica wins, and holds it for a lease.
            async with self.db.write() as conn:
                won = (await conn.execute(replicas_table.update().where(
                    R.id == replica_id, R.lease_until < now).values(
                    lease_until=time.time() + self.lease_s, recovered_by=self.id))).rowcount
            if won:
                await self._recover(replica_id)
                async with self.db.write() as conn:
                    await conn.execute(replicas_table.delete().where(
                        R.id == replica_id, R.recovered_by == self.id))
                taken.append(replica_id)
        return taken

    async def _recover(self, replica_id: str) -> None:
        started = time.monotonic()
        for take_over in self.take_over:
            await take_over(replica_id)
        self.recovered.append(replica_id)
        log.warning("took over the work of a dead replica", extra={
            "replica": replica_id, "seconds": round(time.monotonic() - started, 3)})
