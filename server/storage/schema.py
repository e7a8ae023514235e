"""System tables shared by the whole server.

Each domain keeps its own tables in its own module (``storage/<domain>_tables.py``) on this
same ``metadata``; :func:`rowforge.server.storage.db.Database.prepare_schema` creates them all,
which imports every ``storage/*_tables.py`` module it finds.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

#: The project used when auth is off (embedded mode).
DEFAULT_PROJECT_ID = "default"

projects = Table(
    "rf_projects",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("create_time", DateTime(timezone=True), nullable=False),
)

tokens = Table(
    "rf_tokens",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("project_id", String(64), ForeignKey("rf_projects.id", ondelete="CASCADE"),
           nullable=False),
    # SHA-256 of the secret: tokens are never stored in clear.
    Column("secret_hash", String(64), nullable=False, unique=True),
    Column("name", String(200), nullable=False, default=""),
    Column("create_time", DateTime(timezone=True), nullable=False),
    Column("revoked", Boolean, nullable=False, default=False),
    # read | write | admin (server/scopes.py). Tokens made before scopes existed could do
    # everything, so they keep admin.
    Column("scope", String(16), nullable=False, server_default="admin"),
    Column("expire_time", DateTime(timezone=True), nullable=True),
    Column("revoke_time", DateTime(timezone=True), nullable=True),
    # Recorded in batches (Authenticator.flush_last_used), not on every call.
    Column("last_used_time", DateTime(timezone=True), nullable=True),
)

idempotency_keys = Table(
    "rf_idempotency_keys",
    metadata,
    Column("project_id", String(64), primary_key=True),
    Column("method", String(200), primary_key=True),
    Column("key", String(200), primary_key=True),
    Column("request_hash", String(64), nullable=False),
    Column("response", LargeBinary, nullable=False),
    Column("create_time", DateTime(timezone=True), nullable=False),
)

#: Key/value facts about the deployment (schema version, ...).
server_state = Table(
    "rf_server_state",
    metadata,
    Column("key", String(100), primary_key=True),
    Column("value", JSON, nullable=False),
    Column("note", Text, nullable=False, default=""),
)

Index("ix_rf_tokens_project", tokens.c.project_id)
