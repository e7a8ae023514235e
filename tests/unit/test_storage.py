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
from rowforge.server.storage.migrations import SchemaMismatch


async def test_schema_projects_and_tokens(database_url: str) -> None:
    db = Database(database_url)
    try:
        await asyncio.gather(db.prepare_schema(), db.prepare_schema())  # idempotent, concurrent
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
        await db.prepare_schema()
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


async def test_tokens_of_a_database_made_before_scopes_keep_full_access(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import sqlite3

    from rowforge.server.auth import hash_token, list_tokens

    path = tmp_path / "old.db"
    old = sqlite3.connect(path)  # rf_projects and rf_tokens as the first release made them
    old.executescript("""
        CREATE TABLE rf_projects (id VARCHAR(64) PRIMARY KEY, name VARCHAR(200) NOT NULL,
                                  create_time DATETIME NOT NULL);
        CREATE TABLE rf_tokens (id VARCHAR(32) PRIMARY KEY, project_id VARCHAR(64) NOT NULL
                                REFERENCES rf_projects(id) ON DELETE CASCADE,
                                secret_hash VARCHAR(64) NOT NULL UNIQUE,
                                name VARCHAR(200) NOT NULL, create_time DATETIME NOT NULL,
                                revoked BOOLEAN NOT NULL);
        INSERT INTO rf_projects VALUES ('alpha', 'Alpha', '2026-01-01 00:00:00');
    """)
    old.execute("INSERT INTO rf_tokens VALUES ('abc', 'alpha', ?, 'old', "
                "'2026-01-01 00:00:00', 0)", (hash_token("rf_abc_secret"),))
    old.commit()
    old.close()
    db = Database(f"sqlite+aiosqlite:///{path}")
    try:
        with pytest.raises(SchemaMismatch, match="rowforge admin migrate"):
            await db.prepare_schema()  # an older schema is upgraded only when asked
        assert "upgraded the schema from revision 0001" in await db.prepare_schema(upgrade=True)
        [info] = await list_tokens(db)
        assert (info.scope, info.state, info.expire_time) == ("admin", "active", None)
        auth = Authenticator(db, enabled=True)
        assert await auth.project_for({"authorization": "Bearer rf_abc_secret"},
                                      "/rowforge.v1.TableService/DeleteTable") == "alpha"
    finally:
        await db.close()


async def test_scopes_expiry_and_revocation(database_url: str) -> None:
    from rowforge.server.auth import list_tokens, revoke_token

    db = Database(database_url)
    try:
        await db.prepare_schema()
        await create_project(db, "Alpha", "alpha")
        reader = await create_token(db, "alpha", scope="read")
        short = await create_token(db, "alpha", expires_in_s=0.2)
        with pytest.raises(InvalidArgument):
            await create_token(db, "alpha", scope="root")
        with pytest.raises(InvalidArgument):
            await create_token(db, "alpha", expires_in_s=-1)
        auth = Authenticator(db, enabled=True)
        read = "/rowforge.v1.TableService/ListRows"
        write = "/rowforge.v1.TableService/AddRows"
        assert await auth.project_for({"authorization": f"Bearer {reader}"}, read) == "alpha"
        with pytest.raises(PermissionDenied) as denied:
            await auth.project_for({"authorization": f"Bearer {reader}"}, write)
        assert denied.value.reason == "INSUFFICIENT_SCOPE"
        await asyncio.sleep(0.3)
        with pytest.raises(Unauthenticated) as expired:
            await auth.project_for({"authorization": f"Bearer {short}"}, read)
        assert expired.value.reason == "TOKEN_EXPIRED"
        await revoke_token(db, reader.split("_")[1])
        fresh = Authenticator(db, enabled=True)  # another replica, or after the cache's 30 s
        with pytest.raises(Unauthenticated) as revoked:
            await fresh.project_for({"authorization": f"Bearer {reader}"}, read)
        assert revoked.value.reason == "TOKEN_REVOKED"
        await auth.flush_last_used()
        used = {t.id: t.last_used_time for t in await list_tokens(db, "alpha")}
        assert used[reader.split("_")[1]] is not None
        with pytest.raises(NotFound):
            await revoke_token(db, "nope")
    finally:
        await db.close()
