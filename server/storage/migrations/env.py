"""Alembic's entry point: runs the migrations on the connection rowforge hands it (see
``migrations.upgrade``); there is no ``alembic.ini`` and no URL of its own."""

from __future__ import annotations

from alembic import context

from rowforge.server.storage.migrations import VERSION_TABLE
from rowforge.server.storage.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, version_table=VERSION_TABLE,
                  render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
