"""The async engine, with one write path for SQLite's single writer.

Domain code reads through ``async with db.read() as conn`` and writes through
``async with db.write() as conn`` (one transaction, committed on exit, rolled back on error).
On SQLite every write goes through one asyncio lock, so writers queue in the process instead of
failing with "database is locked"; PostgreSQL writers run concurrently.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from rowforge.server import tracing
from rowforge.server.storage.schema import metadata


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

    async def create_schema(self) -> None:
        """Create (or add missing) system tables. Safe to run on every start and concurrently
        from several replicas."""
        import_table_modules()
        async with self.write() as conn:
            if self.is_postgres:
                # Replicas starting together would race on CREATE TABLE.
                from sqlalchemy import text

                await conn.execute(text("SELECT pg_advisory_xact_lock(7391001)"))
            await conn.run_sync(metadata.create_all)
            await conn.run_sync(add_missing_columns)

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reads (autocommit-free; nothing is written)."""
        async with self.engine.connect() as conn:
            yield conn

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A transaction, committed on exit. Serialised in-process on SQLite."""
        with tracing.span("db.write", **{"db.system": self.dialect}):
            if self._write_lock is None:
                async with self.engine.begin() as conn:
                    yield conn
                return
            async with self._write_lock, self.engine.begin() as conn:
                yield conn

    async def close(self) -> None:
        await self.engine.dispose()

    @staticmethod
    def null_pool(url: str) -> AsyncEngine:
        """An engine without pooling (for short-lived tools)."""
        return create_async_engine(url, poolclass=NullPool)


def add_missing_columns(conn: Any) -> None:
    """Add the columns a newer version declared to system tables an older one created
    (``create_all`` only creates missing tables). Such a column must have a server default
    (or be nullable), so existing rows stay valid."""
    from sqlalchemy import inspect
    from sqlalchemy.schema import CreateColumn

    inspector = inspect(conn)
    for table in metadata.sorted_tables:
        present = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in present:
                continue
            if not column.nullable and column.server_default is None:
                raise RuntimeError(f"cannot add {table.name}.{column.name} to an existing "
                                   "database: it needs a server default")
            spec = CreateColumn(column).compile(dialect=conn.dialect)
            conn.exec_driver_sql(f'ALTER TABLE "{table.name}" ADD COLUMN {spec}')


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
