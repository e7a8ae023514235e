"""The knowledge change feed on real SQLite and PostgreSQL: what the triggers log (and what
they do not), order, compaction, orphan purge, and PostgreSQL's in-order commits."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import sqlalchemy as sa

from rowforge.server.tables.change_feed import ChangeFeed
from rowforge.server.tables.model import Cell, CellStatus, TableSchema
from rowforge.server.tables.store import TableStore

P = "default"


@pytest.fixture
def store(table_store: TableStore) -> TableStore:
    return table_store


def vec(seed: int) -> bytes:
    return np.random.default_rng(seed).standard_normal(384).astype("<f4").tobytes()


async def knowledge(store: TableStore, table_id: str = "kb") -> TableSchema:
    return await store.create_table(P, "knowledge", table_id, [])


async def log(feed: ChangeFeed, schema: TableSchema, after: int = 0) -> list[tuple[str, bool]]:
    return [(c.row_id, c.deleted) for c in await feed.read(schema.storage_id, after, 1000)]


async def test_triggers_log_vector_and_text_writes_and_deletes_only(
        store: TableStore) -> None:
    from rowforge.server.tables.model import ColumnSchema

    schema = await store.create_table(P, "knowledge", "kb", [ColumnSchema("note")])
    feed = ChangeFeed(store.db)
    await feed.track(schema)
    await feed.track(schema)  # idempotent
    with_vec, plain, bare = await store.insert_rows(schema, [
        {"Title": "a", "Text Embed": vec(1)}, {"Title": "b"}, {"note": "no text"}])
    # A row with a vector or a Title/Text is logged; one with neither has nothing to index.
    assert await log(feed, schema) == [(with_vec.id, False), (plain.id, False)]
    head = await feed.head(schema.storage_id)
    await store.update_rows(schema, {plain.id: {"Title": "bb"}})  # the BM25 text changed
    await store.update_rows(schema, {bare.id: {"note": "x"}})  # not an indexed column
    await store.write_cells(schema, plain.id, {"Text Embed": Cell(value=[1.0] * 8)})
    await store.write_cells(schema, with_vec.id, {"Title Embed": Cell(
        value=None, status=CellStatus.ERROR, error="model down")})  # a vector removed
    await store.delete_rows(schema, [with_vec.id])
    assert await log(feed, schema, head) == [
        (plain.id, False), (plain.id, False), (with_vec.id, False), (with_vec.id, True)]
    changes = await feed.read(schema.storage_id, 0, 1000)
    assert [c.id for c in changes] == sorted(c.id for c in changes)
    assert await feed.head(schema.storage_id) == changes[-1].id
    assert await feed.read(schema.storage_id, 0, 2) == changes[:2]


async def test_triggers_of_an_older_version_are_replaced(store: TableStore) -> None:
    schema = await knowledge(store)
    sid = schema.storage_id
    if store.db.is_sqlite:  # the older version's trigger (vectors only), as it was created
        async with store.db.write() as conn:
            await conn.execute(sa.text(
                f'CREATE TRIGGER "{sid}_kc_ai" AFTER INSERT ON "{sid}" BEGIN INSERT INTO '
                f"rf_knowledge_changes (storage_id, row_id, deleted) VALUES ('{sid}', new.id, "
                "0); END"))
    feed = ChangeFeed(store.db)
    await feed.track(schema)
    row, = await store.insert_rows(schema, [{"Title": "only a title"}])
    assert await log(feed, schema) == [(row.id, False)]  # logged once, by the new trigger


async def test_untracked_tables_log_nothing_and_tables_are_separate(store: TableStore) -> None:
    one, two = await knowledge(store, "one"), await knowledge(store, "two")
    feed = ChangeFeed(store.db)
    await store.insert_rows(one, [{"Text Embed": vec(1)}])  # before tracking
    assert await feed.head(one.storage_id) == 0
    await feed.track(one)
    await store.insert_rows(two, [{"Text Embed": vec(2)}])
    assert await feed.head(two.storage_id) == 0
    row, = await store.insert_rows(one, [{"Text Embed": vec(3)}])
    assert await log(feed, one) == [(row.id, False)]


async def test_compaction_keeps_each_rows_last_entry(store: TableStore) -> None:
    schema = await knowledge(store)
    feed = ChangeFeed(store.db)
    await feed.track(schema)
    a, b = await store.insert_rows(schema, [{"Text Embed": vec(1)}, {"Text Embed": vec(2)}])
    for seed in range(3):
        await store.write_cells(schema, a.id, {"Text Embed": Cell(value=[float(seed)] * 8)})
    await store.delete_rows(schema, [b.id])
    before = await feed.read(schema.storage_id, 0, 100)
    upto = before[-2].id  # not the last entry: an entry after ``upto`` is never compacted
    deleted = await feed.compact(schema.storage_id, upto)
    after = await feed.read(schema.storage_id, 0, 100)
    assert deleted == len(before) - len(after) > 0
    last_of = {c.row_id: c for c in before if c.id <= upto}
    assert {c for c in after if c.id <= upto} == set(last_of.values())
    assert after[-1] == before[-1]
    assert await feed.compact(schema.storage_id, upto) == 0


async def test_entries_of_deleted_tables_are_purged(store: TableStore) -> None:
    kept, gone = await knowledge(store, "kept"), await knowledge(store, "gone")
    feed = ChangeFeed(store.db)
    for schema in (kept, gone):
        await feed.track(schema)
        await store.insert_rows(schema, [{"Text Embed": vec(1)}])
    await store.delete_table(P, "knowledge", "gone")
    assert await feed.purge_orphans() == 1
    assert await feed.head(gone.storage_id) == 0
    assert await feed.head(kept.storage_id) > 0


async def test_postgres_writers_of_one_table_commit_their_entries_in_order(
        store: TableStore) -> None:
    db = store.db
    if not db.is_postgres:
        pytest.skip("SQLite has a single writer")
    schema = await knowledge(store)
    feed = ChangeFeed(db)
    await feed.track(schema)
    table = sa.table(schema.storage_id, sa.column("id"), sa.column("updated_at"),
                     sa.column(schema.column("Text Embed").storage_name))  # type: ignore[union-attr]
    embed = schema.column("Text Embed").storage_name  # type: ignore[union-attr]

    def insert(row_id: str) -> sa.Insert:
        return table.insert().values({"id": row_id, "updated_at": 0, embed: vec(1)})

    first_inserted = asyncio.Event()
    release = asyncio.Event()

    async def slow_writer() -> None:
        async with db.engine.begin() as conn:
            await conn.execute(insert("first"))
            first_inserted.set()
            await release.wait()  # holds its feed entry uncommitted

    async def fast_writer() -> None:
        await first_inserted.wait()
        async with db.engine.begin() as conn:
            await conn.execute(insert("second"))

    slow = asyncio.create_task(slow_writer())
    fast = asyncio.create_task(fast_writer())
    await first_inserted.wait()
    await asyncio.sleep(0.3)
    # The second writer waits for the first: a reader cannot see "second" without "first".
    assert not fast.done()
    assert await log(feed, schema) == []
    release.set()
    await asyncio.gather(slow, fast)
    changes = await feed.read(schema.storage_id, 0, 10)
    assert [c.row_id for c in changes] == ["first", "second"]
    assert changes[0].id < changes[1].id
