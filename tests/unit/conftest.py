"""Fixtures shared by the unit tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from rowforge.server.auth import ensure_default_project
from rowforge.server.providers import ModelRegistry
from rowforge.server.storage.db import Database
from rowforge.server.tables.store import TableStore


@pytest.fixture
async def table_store(database_url: str) -> AsyncIterator[TableStore]:
    """A TableStore on a fresh database of each kind (``database_url``), default project
    created, built-in models only."""
    db = Database(database_url)
    await db.create_schema()
    await ensure_default_project(db)
    tables = TableStore(db, models=ModelRegistry.from_config([]))
    try:
        yield tables
    finally:
        await tables.close()
        await db.close()
