"""When a table's full-text index exists: built on first use on SQLite.

On SQLite the FTS5 index (:mod:`.fulltext`) is kept by triggers, and they are the largest
part of writing a generated row: the inputs are tokenised at insert, then the whole row's
text is removed and indexed again when a generated cell lands (~50 µs per row; the rest of
the insert and the cell update together cost ~15 µs). A table nobody searches pays that for
nothing, so:

* every table gets it the first time something searches its rows (``ListRows`` with a
  ``search_query``, :meth:`~.store.TableStore.fulltext_search`): built then from the stored
  rows in one write transaction (FTS5 ``'rebuild'``, like the rebuild a column change does)
  and kept by the triggers from then on. Knowledge tables too: their hybrid search and RAG
  rank with their own BM25 index (:mod:`rowforge.server.knowledge.lexical_index`), so FTS5
  serves only ListRows' ``search_query`` there.

Results are the same either way; the first search of a large table pays for the build.

On PostgreSQL the per-column GIN indexes are created with their columns, as before: their
upkeep is the database server's work, and replicas would otherwise race to create them.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from rowforge.server.storage.db import Database
from rowforge.server.tables import fulltext
from rowforge.server.tables.model import ColumnSchema, TableSchema


class FulltextIndexes:
    """Creates, migrates and finds the full-text indexes of user tables.

    Args:
        db: The database.
        generation: Returns the schema store's change counter (bumped by every schema
            change): what this object remembers about a table is trusted only while it is
            unchanged.
    """

    def __init__(self, db: Database, generation: Callable[[], int]) -> None:
        self.db = db
        self._generation = generation
        # Storage ids known to have their index (SQLite), with the generation it was seen at.
        self._present: dict[str, int] = {}

    def lazy(self, schema: TableSchema) -> bool:
        """Whether the table's index waits for its first search."""
        return self.db.is_sqlite

    async def exists(self, conn: AsyncConnection, schema: TableSchema) -> bool:
        """Whether the table has its index (always true for an eager one)."""
        if not self.lazy(schema):
            return True
        found = await conn.scalar(sa.text(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = :name"
        ).bindparams(name=fulltext.fts_name(schema)))
        return found is not None

    # -- DDL, inside the schema change's transaction ----------------------------------------

    async def created(self, conn: AsyncConnection, schema: TableSchema) -> None:
        """A table was created (or copied, rows included)."""
        if not self.lazy(schema):
            await fulltext.create(conn, schema)

    async def column_added(self, conn: AsyncConnection, old: TableSchema, new: TableSchema,
                           col: ColumnSchema) -> None:
        """``col`` was added to the SQL table (``old`` -> ``new``)."""
        if not self.lazy(old):
            await fulltext.column_added(conn, old, new, col)
        elif col.dtype == "str":
            await fulltext.drop(conn, old)  # the next search builds it with the new column

    async def columns_dropping(self, conn: AsyncConnection, old: TableSchema,
                               dropped: Collection[str]) -> bool:
        """Columns ``dropped`` are about to be dropped: drop an index covering one of them
        first (SQLite refuses to drop a column its FTS triggers use). Returns whether the
        caller must create the index again afterwards (eager tables; a lazy table's next
        search does)."""
        if not any(c.dtype == "str" for c in old.columns if c.id in dropped):
            return False
        await fulltext.drop(conn, old)
        return not self.lazy(old) and not self.db.is_postgres

    # -- searches ---------------------------------------------------------------------------

    async def ensure(self, schema: TableSchema, current: Callable[
            [AsyncConnection, str], object]) -> None:
        """Make sure the table's index exists before it is searched.

        ``current(conn, storage_id)`` loads the committed schema inside the write
        transaction (the index covers the table's str columns as they are now, whatever the
        caller's copy of the schema says).
        """
        if not self.lazy(schema) or not fulltext.text_columns(schema):
            return
        generation = self._generation()
        if self._present.get(schema.storage_id) == generation:
            return
        async with self.db.read() as conn:
            present = await self.exists(conn, schema)
        if not present:
            async with self.db.write() as conn:
                now = await current(conn, schema.storage_id)  # type: ignore[misc]
                if now is None:
                    return  # deleted meanwhile: the search reports it
                if not await self.exists(conn, now):
                    await fulltext.create(conn, now)
        if len(self._present) > 10_000:
            self._present.clear()
        self._present[schema.storage_id] = generation
