"""System tables of the generative-tables domain: one metadata row per user table.

Each user table's rows live in their own SQL table named after ``storage_id`` (an internal id,
never the user's table id), so renaming a table only rewrites this row. ``columns`` holds the
ordered column list as JSON, each column with its ``storage_name`` (``c_<n>``, from
``next_column``): column renames and reorders are metadata-only too.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Index,
    Integer,
    String,
    Table,
    UniqueConstraint,
)

from rowforge.server.storage.schema import metadata

user_tables = Table(
    "rf_user_tables",
    metadata,
    Column("storage_id", String(40), primary_key=True),
    Column("project_id", String(64), nullable=False),
    Column("table_type", String(16), nullable=False),
    Column("table_id", String(100), nullable=False),
    #: Ordered columns: [{"id", "dtype", "gen_config", "system", "storage_name"}, ...].
    Column("columns", JSON, nullable=False),
    Column("embedding_model", String(200), nullable=False, default=""),
    #: Text analyzer of a knowledge table's BM25 index (added later: "" on older rows means
    #: the default).
    Column("text_analyzer", String(40), nullable=False, default="", server_default=""),
    #: Bumped on every schema change.
    Column("version", Integer, nullable=False, default=1),
    #: Next free n for a column's SQL name c_<n> (never reused, so a dropped column's name
    #: cannot alias a new one).
    Column("next_column", Integer, nullable=False, default=1),
    Column("create_time", DateTime(timezone=True), nullable=False),
    Column("update_time", DateTime(timezone=True), nullable=False),
    UniqueConstraint("project_id", "table_type", "table_id", name="uq_rf_user_tables_id"),
)

Index("ix_rf_user_tables_project", user_tables.c.project_id, user_tables.c.table_type)
