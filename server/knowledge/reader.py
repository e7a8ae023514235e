"""Read-only queries of the search hot path, written once as plain functions of a
synchronous SQLAlchemy ``Connection`` and run the cheapest way for each database.

* SQLite: aiosqlite sends every cursor operation (checkout, execute, fetch, close, reset) to
  its thread separately: about ten thread hops and 0.5 ms for a 20-row read, ten times the
  query. Here a query runs in one worker thread on its own pysqlite connection (read-only,
  WAL lets it read beside the writer), so a whole search side costs one hop, and the vector
  side runs its graph search and its row read in the same one.
* PostgreSQL: ``AsyncConnection.run_sync`` on the server's own engine (asyncpg).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from rowforge.server.storage.db import Database

P = ParamSpec("P")
T = TypeVar("T")

#: SQLite file pages read through a shared memory map (as the table store does).
MMAP_BYTES = 256 * 1024 * 1024


def _read_only_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA query_only=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute(f"PRAGMA mmap_size={MMAP_BYTES}")
    cursor.close()


def _scan_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA query_only=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA mmap_size=0")
    cursor.close()


class Reader:
    """Runs ``fn(conn, *args)`` read-only queries (see the module docstring)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._engine: sa.Engine | None = None
        self._scan_engine: sa.Engine | None = None
        if db.is_sqlite:
            url = make_url(db.url).set(drivername="sqlite")
            if url.database and url.database != ":memory:":
                self._engine = sa.create_engine(
                    url, connect_args={"check_same_thread": False, "timeout": 30},
                    pool_size=4, max_overflow=8)
                sa.event.listen(self._engine, "connect", _read_only_pragmas)
                # Full scans (index rebuilds) read every page once: through read() calls, so
                # that they leave no table mapped into this process (a memory map's pages
                # count in its RSS; 20 tables scanned in turn left ~300 MiB of them).
                self._scan_engine = sa.create_engine(
                    url, connect_args={"check_same_thread": False, "timeout": 30},
                    poolclass=sa.pool.NullPool)
                sa.event.listen(self._scan_engine, "connect", _scan_pragmas)

    @property
    def threaded(self) -> bool:
        """Queries run in worker threads (:meth:`in_thread` may be used there)."""
        return self._engine is not None

    async def run(self, fn: Callable[Concatenate[sa.Connection, P], T], *args: P.args,
                  **kwargs: P.kwargs) -> T:
        """``fn(conn, *args, **kwargs)`` on a read connection."""
        if self._engine is not None:
            return await asyncio.to_thread(self.in_thread, fn, *args,  # type: ignore[arg-type]
                                           **kwargs)
        async with self.db.read() as conn:
            return await conn.run_sync(fn, *args, **kwargs)

    async def scan(self, fn: Callable[Concatenate[sa.Connection, P], T], *args: P.args,
                   **kwargs: P.kwargs) -> T:
        """As :meth:`run`, for a page of a full scan: on SQLite a connection that reads
        without a memory map (see ``__init__``)."""
        engine = self._scan_engine
        if engine is None:
            return await self.run(fn, *args, **kwargs)

        def scan() -> T:
            with engine.connect() as conn:
                return fn(conn, *args, **kwargs)

        return await asyncio.to_thread(scan)

    def in_thread(self, fn: Callable[Concatenate[sa.Connection, P], T], *args: P.args,
                  **kwargs: P.kwargs) -> T:
        """``fn(conn, ...)`` from a worker thread (SQLite only: see :attr:`threaded`)."""
        assert self._engine is not None
        with self._engine.connect() as conn:
            return fn(conn, *args, **kwargs)

    def close(self) -> None:
        for engine in (self._engine, self._scan_engine):
            if engine is not None:
                engine.dispose()
