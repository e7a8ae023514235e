"""Storage: the async SQLAlchemy engine and the system tables (SQLite and PostgreSQL)."""

from rowforge.server.storage.db import Database
from rowforge.server.storage.schema import metadata

__all__ = ["Database", "metadata"]
