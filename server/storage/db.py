"""The async engine, with one write path for SQLite's single writer.

Domain code reads through ``async with db.read() as conn`` and writes through
``async with db.write() as conn`` (one transaction, committed on exit, rolled back on error).
On SQLite every write goes through one asyncio lock, so writers queue in the process instead of
failing with "database is locked"; PostgreSQL writers run concurrently.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from rowforge.server import tracing


class Database:
    """One database (SQLite file or PostgreSQL), its engine and its system tables."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        parsed = make_url(url)
        self.dialect = parsed.get_backend_name()
        self.is_sqlite = self.dialect == "sqlite"
        self.is_postgres = self.dialect == "postgresql"
        if not (self.is_sqlite or self.is_postgres):
            raise ValueError(f"unsupported database {self.dialect!r}: use sqlite or postgresql")
        self._write_lock = asyncio.Lock() if self.is_sqlite else None
        if self.is_sqlite:
            database = parsed.database or ""
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            self.engine: AsyncEngine = create_async_engine(
                url, echo=echo, connect_args={"timeout": 30}, pool_size=8, max_overflow=8
            )
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        else:
            self.engine = create_async_engine(
                url, echo=echo, pool_size=10, max_overflow=20, pool_pre_ping=True
            )

    async def prepare_schema(self, *, upgrade: bool = False) -> str:
        """Create the system tables in an empty database, or check that an existing one is at
        this rowforge's schema revision, upgrading it when ``upgrade`` (``rowforge admin
        migrate``); returns what was done. Safe to run concurrently from several replicas.

        Raises:
            SchemaMismatch: the schema is newer, or older and ``upgrade`` is false.
        """
        from rowforge.server.storage import migrations

        import_table_modules()
        async with self.write() as conn:
            if self.is_postgres:
                # Replicas starting together would race on CREATE TABLE.
                await conn.execute(text("SELECT pg_advisory_xact_lock(7391001)"))
            return await conn.run_sync(lambda sync: migrations.prepare(sync, upgrade=upgrade))

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reads (autocommit-free; nothing is written)."""
        async with self.engine.connect() as conn:
            yield conn

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A transaction, committed on exit. Serialised in-process on SQLite."""
        with tracing.leaf("db.write", **{"db.system": self.dialect}):
            if self._write_lock is None:
                async with self.engine.begin() as conn:
                    yield conn
                return
            async with self._write_lock, self.engine.begin() as conn:
                yield conn

    @contextlib.asynccontextmanager
    async def advisory_lock(self, name: str, *, poll_s: float = 0.01) -> AsyncIterator[None]:
        """Hold the cluster-wide lock ``name`` (a PostgreSQL session advisory lock on a
        connection of its own) for the block; every replica on this database sees it.

        Polled with ``pg_try_advisory_lock`` rather than blocking in the server, so a
        cancelled waiter never ends up holding the lock with nobody to release it. On SQLite
        (one machine, processes sharing the file) this is a no-op: callers also lock in-process.
        """
        if not self.is_postgres:
            yield
            return
        key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
        async with self.engine.connect() as conn:
            while not await conn.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}):
                await conn.rollback()
                await asyncio.sleep(poll_s)
            try:
                yield
            finally:
                try:
                    await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                    await conn.rollback()
                except BaseException:
                    # The connection (and so the lock) must not go back to the pool held.
                    await conn.invalidate()
                    raise

    async def close(self) -> None:
        await self.engine.dispose()

    @staticmethod
    def null_pool(url: str) -> AsyncEngine:
        """An engine without pooling (for short-lived tools)."""
        return create_async_engine(url, poolclass=NullPool)


def import_table_modules() -> None:
    """Import every ``storage/*_tables.py`` so their tables join ``metadata``."""
    import importlib
    import pkgutil

    import rowforge.server.storage as package

    for info in pkgutil.iter_modules(package.__path__):
        if info.name.endswith("_tables"):
            importlib.import_module(f"{package.__name__}.{info.name}")


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
