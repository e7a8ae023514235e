"""Find the test PostgreSQL and make throwaway databases on it."""

from __future__ import annotations

import asyncio
import os
import uuid
from functools import cache

DEFAULT_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"


def _dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


@cache
def postgres_url() -> str | None:
    """The admin URL of a reachable PostgreSQL (``ROWFORGE_TEST_POSTGRES_URL`` or the local
    default), or None."""
    url = os.environ.get("ROWFORGE_TEST_POSTGRES_URL", DEFAULT_URL)
    if url.lower() in {"", "0", "off", "none"}:
        return None

    async def probe() -> bool:
        import asyncpg

        try:
            conn = await asyncpg.connect(_dsn(url), timeout=3)
        except (TimeoutError, OSError, asyncpg.PostgresError):
            return False
        await conn.close()
        return True

    return url if asyncio.run(probe()) else None


SKIP_REASON = ("PostgreSQL not reachable (set ROWFORGE_TEST_POSTGRES_URL or start one on "
               "127.0.0.1:5432): PostgreSQL tests skipped")


def create_database() -> str:
    """Create a fresh database; return its SQLAlchemy URL."""
    admin = postgres_url()
    assert admin is not None
    name = f"rf_test_{uuid.uuid4().hex[:12]}"

    async def run() -> None:
        import asyncpg

        conn = await asyncpg.connect(_dsn(admin))
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(run())
    return admin.rsplit("/", 1)[0] + "/" + name


def drop_database(url: str) -> None:
    admin = postgres_url()
    assert admin is not None
    name = url.rsplit("/", 1)[1]

    async def run() -> None:
        import asyncpg

        conn = await asyncpg.connect(_dsn(admin))
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(run())
