"""Tables of the files domain: one metadata row per stored file.

Content lives in the blob store under its SHA-256; a blob is removed when no row (of any
project) references its hash anymore.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, Index, String, Table

from rowforge.server.storage.schema import metadata

files = Table(
    "rf_files",
    metadata,
    Column("project_id", String(64), primary_key=True),
    Column("id", String(32), primary_key=True),
    Column("name", String(255), nullable=False),
    Column("content_type", String(200), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("create_time", DateTime(timezone=True), nullable=False),
)

# ListFiles: newest first per project, keyset on (create_time, id).
Index("ix_rf_files_project_time", files.c.project_id, files.c.create_time, files.c.id)
# Blob garbage collection: is this content still referenced anywhere?
Index("ix_rf_files_sha256", files.c.sha256)
