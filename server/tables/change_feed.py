"""The change feed of knowledge tables: which rows' embeddings or texts changed after a
watermark.

Database triggers on a knowledge table's row table append to ``rf_knowledge_changes`` (see
:mod:`rowforge.server.storage.knowledge_tables`) in the transaction of the change itself:

* after an INSERT of a row holding at least one vector or a Title or Text,
* after an UPDATE that sets an embedding column (a new vector, or NULL when the cell failed)
  or the Title or Text (the BM25 index's texts: system columns, so never dropped),
* after a DELETE (a tombstone).

So every write path (AddRows, the engine's cell writer, EmbedFile, imports, DeleteRows, a
replica on the same PostgreSQL) is covered without the writers knowing about the indexes.
Catch-up reads the entries after the index's watermark, then the rows' *current* vectors and
texts: applying an entry twice, or an older entry after a newer one, leaves the same state.

Ordering on PostgreSQL: ids come from a sequence when the entry is inserted, but transactions
commit in any order, so a reader could see id 11 before id 10 commits and skip 10 forever. The
trigger therefore takes a transaction-scoped advisory lock per table before inserting: the
writers of one knowledge table commit their entries one transaction at a time, in id order
(writers of different tables do not wait for each other). A transaction writing several
knowledge tables (the cell writer's group commit) meets them in a fixed order, so these locks
cannot deadlock. SQLite has a single writer anyway.

Triggers are created on first use of a table's index (:meth:`ChangeFeed.track`), before the
index is built from a full scan, so nothing written before them is missed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from rowforge.server.storage.db import Database
from rowforge.server.storage.knowledge_tables import knowledge_changes
from rowforge.server.storage.user_tables import user_tables
from rowforge.server.tables.layout import value_name
from rowforge.server.tables.model import EMBEDDING_DTYPE, KT_TEXT, KT_TITLE, TableSchema

# Storage ids are generated (``ut_<hex>``); checked anyway before they reach DDL text.
_STORAGE_ID = re.compile(r"ut_[0-9a-f]{1,36}")
_COLUMN = re.compile(r"c_[0-9]{1,9}")
#: Advisory lock keys (first key: this feature; second: the table's name hash).
_PG_LOCK_NAMESPACE = 7391004
_PG_DDL_LOCK = 7391005

_PG_FUNCTION = f"""
CREATE OR REPLACE FUNCTION rf_knowledge_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  -- One writer of this table at a time until commit: entries commit in id order.
  PERFORM pg_advisory_xact_lock({_PG_LOCK_NAMESPACE}, hashtext(TG_TABLE_NAME));
  IF TG_OP = 'DELETE' THEN
    INSERT INTO rf_knowledge_changes (storage_id, row_id, deleted)
      VALUES (TG_TABLE_NAME, OLD.id, true);
    RETURN OLD;
  END IF;
  INSERT INTO rf_knowledge_changes (storage_id, row_id, deleted)
    VALUES (TG_TABLE_NAME, NEW.id, false);
  RETURN NEW;
END $$
"""


@dataclass(frozen=True)
class Change:
    """One entry of the feed."""

    id: int
    row_id: str
    deleted: bool


def embedding_columns(schema: TableSchema) -> list[str]:
    """SQL names of the table's embedding columns, in table order."""
    return [value_name(c) for c in schema.columns if c.dtype == EMBEDDING_DTYPE]


def text_columns(schema: TableSchema) -> list[str]:
    """SQL names of the columns the BM25 index holds (Title, Text), in table order."""
    return [value_name(c) for c in schema.columns
            if c.system and c.id in (KT_TITLE, KT_TEXT) and c.dtype == "str"]


def _checked(schema: TableSchema) -> tuple[str, list[str], list[str]]:
    sid = schema.storage_id
    cols = embedding_columns(schema)
    texts = text_columns(schema)
    if not _STORAGE_ID.fullmatch(sid) or not all(_COLUMN.fullmatch(c) for c in cols + texts):
        raise ValueError(f"unexpected storage names for table {schema.id!r}: {sid}, {cols}")
    return sid, cols, texts


class ChangeFeed:
    """Reads and maintains ``rf_knowledge_changes``."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._tracked: set[tuple[str, tuple[str, ...]]] = set()

    async def track(self, schema: TableSchema) -> None:
        """Create the table's triggers (idempotent; safe from several replicas at once)."""
        sid, cols, texts = _checked(schema)
        key = (sid, tuple(cols + texts))
        if key in self._tracked or not cols:
            return
        async with self.db.write() as conn:
            if self.db.is_postgres:
                await self._track_postgres(conn, sid, cols + texts)
            else:
                await self._track_sqlite(conn, sid, cols + texts)
        self._tracked.add(key)

    @staticmethod
    async def _track_sqlite(conn: AsyncConnection, sid: str, cols: list[str]) -> None:
        has_value = " OR ".join(f'new."{c}" IS NOT NULL' for c in cols)
        listed = ", ".join(f'"{c}"' for c in cols)
        log = "INSERT INTO rf_knowledge_changes (storage_id, row_id, deleted) VALUES"
        # "_kc_" triggers of older versions watched the embedding columns only; SQLite cannot
        # replace a trigger, so the current ones have new names ("_kc2_").
        for statement in (
            *(f'DROP TRIGGER IF EXISTS "{sid}_kc_{s}"' for s in ("ai", "au", "ad")),
            f'CREATE TRIGGER IF NOT EXISTS "{sid}_kc2_ai" AFTER INSERT ON "{sid}" '
            f"WHEN {has_value} BEGIN {log} ('{sid}', new.id, 0); END",
            f'CREATE TRIGGER IF NOT EXISTS "{sid}_kc2_au" AFTER UPDATE OF {listed} ON "{sid}" '
            f"BEGIN {log} ('{sid}', new.id, 0); END",
            f'CREATE TRIGGER IF NOT EXISTS "{sid}_kc2_ad" AFTER DELETE ON "{sid}" '
            f"BEGIN {log} ('{sid}', old.id, 1); END",
        ):
            await conn.execute(sa.text(statement))

    @staticmethod
    async def _track_postgres(conn: AsyncConnection, sid: str, cols: list[str]) -> None:
        # Concurrent CREATE OR REPLACE of one function fails ("tuple concurrently updated").
        await conn.execute(sa.text(f"SELECT pg_advisory_xact_lock({_PG_DDL_LOCK})"))
        await conn.execute(sa.text(_PG_FUNCTION))
        has_value = " OR ".join(f'NEW."{c}" IS NOT NULL' for c in cols)
        listed = ", ".join(f'"{c}"' for c in cols)
        run = "FOR EACH ROW EXECUTE FUNCTION rf_knowledge_change()"
        for statement in (
            f'CREATE OR REPLACE TRIGGER "{sid}_kc_ai" AFTER INSERT ON "{sid}" '
            f"FOR EACH ROW WHEN ({has_value}) EXECUTE FUNCTION rf_knowledge_change()",
            f'CREATE OR REPLACE TRIGGER "{sid}_kc_au" AFTER UPDATE OF {listed} ON "{sid}" {run}',
            f'CREATE OR REPLACE TRIGGER "{sid}_kc_ad" AFTER DELETE ON "{sid}" {run}',
        ):
            await conn.execute(sa.text(statement))

    async def head(self, storage_id: str) -> int:
        """The last change id of a table (0: none yet)."""
        t = knowledge_changes
        async with self.db.read() as conn:
            found = await conn.scalar(sa.select(sa.func.max(t.c.id)).where(
                t.c.storage_id == storage_id))
        return int(found or 0)

    async def last_id(self) -> int:
        """The highest change id ever given, of any table (compacted ones included): a saved
        index whose watermark is beyond it comes from a newer state of the database (a
        restored backup) and must be rebuilt."""
        async with self.db.read() as conn:
            if self.db.is_sqlite:
                found = await conn.scalar(sa.text(
                    "SELECT seq FROM sqlite_sequence WHERE name = :name"),
                    {"name": knowledge_changes.name})
            else:
                sequence = await conn.scalar(sa.text(
                    "SELECT pg_get_serial_sequence(:name, 'id')"),
                    {"name": knowledge_changes.name})
                found = await conn.scalar(sa.text(
                    f"SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM {sequence}"))
        return int(found or 0)

    async def read(self, storage_id: str, after: int, limit: int) -> list[Change]:
        """Up to ``limit`` changes of a table with ids above ``after``, in id order."""
        async with self.db.read() as conn:
            return await conn.run_sync(read_changes, storage_id, after, limit)

    async def compact(self, storage_id: str, upto: int) -> int:
        """Delete entries up to ``upto`` that a later entry of the same row supersedes.

        Safe for every reader whatever its watermark: catch-up reads a row's current state,
        so only the row's last entry matters. Returns how many entries were deleted.
        """
        t = knowledge_changes
        scope = (t.c.storage_id == storage_id, t.c.id <= upto)
        # One grouping pass (a correlated "newer entry exists" would probe per entry).
        last_of_row = sa.select(sa.func.max(t.c.id)).where(*scope).group_by(t.c.row_id)
        async with self.db.write() as conn:
            result = await conn.execute(t.delete().where(*scope, t.c.id.not_in(last_of_row)))
        return int(result.rowcount or 0)

    async def purge_orphans(self) -> int:
        """Delete the entries of tables that no longer exist; returns how many."""
        t = knowledge_changes
        async with self.db.write() as conn:
            result = await conn.execute(t.delete().where(
                t.c.storage_id.not_in(sa.select(user_tables.c.storage_id))))
        return int(result.rowcount or 0)

    def forget(self, storage_id: str) -> None:
        """Drop the in-process memory that a table's triggers exist (it was deleted)."""
        self._tracked = {k for k in self._tracked if k[0] != storage_id}


_READ = (sa.select(knowledge_changes.c.id, knowledge_changes.c.row_id,
                   knowledge_changes.c.deleted)
         .where(knowledge_changes.c.storage_id == sa.bindparam("sid"),
                knowledge_changes.c.id > sa.bindparam("after"))
         .order_by(knowledge_changes.c.id).limit(sa.bindparam("limit")))


def read_changes(conn: sa.Connection, storage_id: str, after: int, limit: int) -> list[Change]:
    """:meth:`ChangeFeed.read` on a synchronous connection (see ``knowledge/reader.py``)."""
    rows = conn.execute(_READ, {"sid": storage_id, "after": after, "limit": limit})
    return [Change(int(r[0]), r[1], bool(r[2])) for r in rows]
