"""System tables of the knowledge domain: the change feed of knowledge tables' embeddings.

The vector indexes (hnswlib, in the data dir) are caches of the embeddings stored in the rows.
To catch up after a restart or on another replica, an index needs every change since the
watermark it was saved with: database triggers on each knowledge table's rows append one entry
here per inserted row (with a vector), per write of an embedding column and per deleted row, in
the transaction of the change itself. ``id`` never goes back and is never reused (SQLite
AUTOINCREMENT, a PostgreSQL identity), so "changes after N" is well defined; on PostgreSQL the
trigger serialises writers of one table so that ids also commit in order (see
:mod:`rowforge.server.tables.change_feed`).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Index, Integer, String, Table

from rowforge.server.storage.schema import metadata

knowledge_changes = Table(
    "rf_knowledge_changes",
    metadata,
    Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True,
           autoincrement=True),
    #: The row table (``rf_user_tables.storage_id``): survives renames.
    Column("storage_id", String(40), nullable=False),
    Column("row_id", String(40), nullable=False),
    #: The row is gone (a tombstone); otherwise read its current vectors.
    Column("deleted", Boolean, nullable=False, default=False),
    sqlite_autoincrement=True,
)

# Catch-up reads one table's changes after a watermark.
Index("ix_rf_knowledge_changes_table", knowledge_changes.c.storage_id, knowledge_changes.c.id)
