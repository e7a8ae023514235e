"""System tables and projects/tokens on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

import pytest

from rowforge.server.auth import Authenticator, create_project, create_token
from rowforge.server.errors import (
    AlreadyExists,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from rowforge.server.storage.db import Database


async def test_schema_projects_and_tokens(database_url: str) -> None:
    db = Database(database_url)
    try:
        await asyncio.gather(db.create_schema(), db.create_schema())  # idempotent, concurrent
        project = await create_project(db, "My Project")
        assert project.id.startswith("my-project-")
        with pytest.raises(AlreadyExists):
            await create_project(db, "again", project.id)
        with pytest.raises(InvalidArgument):
            await create_project(db, "  ")
        with pytest.raises(NotFound):
            await create_token(db, "missing")
        token = await create_token(db, project.id, "ci")
        auth = Authenticator(db, enabled=True)
        assert await auth.project_for({"authorization": f"Bearer {token}"}) == project.id
        assert await auth.project_for({"authorization": f"bearer {token}",
                                       "x-project-id": project.id}) == project.id
        with pytest.raises(PermissionDenied):
            await auth.project_for({"authorization": f"Bearer {token}", "x-project-id": "other"})
        with pytest.raises(Unauthenticated):
            await auth.project_for({"authorization": f"Bearer {token}x"})
        off = Authenticator(db, enabled=False)
        assert await off.project_for({}) == "default"
    finally:
        await db.close()


async def test_sqlite_writes_are_serialised(tmp_path) -> None:  # type: ignore[no-untyped-def]
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'w.db'}")
    try:
        await db.create_schema()
        # Many concurrent writers never hit "database is locked".
        await asyncio.gather(*(create_project(db, f"p{i}", f"p{i}") for i in range(40)))
        async with db.read() as conn:
            from sqlalchemy import func, select

            from rowforge.server.storage.schema import projects

            assert await conn.scalar(select(func.count()).select_from(projects)) == 40
    finally:
        await db.close()


def test_unsupported_database() -> None:
    with pytest.raises(ValueError, match="unsupported database"):
        Database("mysql+aiomysql://x/y")
