"""Fixtures shared by the unit tests (server modules imported inside them: the client's
tests also run where only the client is installed)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest


@pytest.fixture
async def table_store(database_url: str) -> AsyncIterator[Any]:
    """A TableStore on a fresh database of each kind (``database_url``), default project
    created, built-in models only."""
    from rowforge.server.auth import ensure_default_project
    from rowforge.server.providers import ModelRegistry
    from rowforge.server.storage.db import Database
    from rowforge.server.tables.store import TableStore

    db = Database(database_url)
    await db.prepare_schema()
    await ensure_default_project(db)
    tables = TableStore(db, models=ModelRegistry.from_config([]))
    try:
        yield tables
    finally:
        await tables.close()
        await db.close()
