"""TableIndex and KnowledgeIndexes on real SQLite and PostgreSQL: rebuild from the rows, catch
up with the change feed, persistence with watermarks, recovery from lost or corrupt files,
deleted tables; every answer checked against the rows in the database."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from rowforge.server.errors import NotFound
from rowforge.server.knowledge import table_index as table_index_module
from rowforge.server.knowledge.indexes import KnowledgeIndexes
from rowforge.server.knowledge.reader import Reader
from rowforge.server.knowledge.table_index import MANIFEST, TableIndex
from rowforge.server.tables.change_feed import ChangeFeed
from rowforge.server.tables.model import Cell, TableSchema
from rowforge.server.tables.store import TableStore

P = "default"
DIM = 384  # the built-in embedder's size (embedding columns check it)


@pytest.fixture
def store(table_store: TableStore) -> TableStore:
    return table_store


@pytest.fixture
def reader(store: TableStore) -> Iterator[Reader]:
    reads = Reader(store.db)
    yield reads
    reads.close()


def table_index(store: TableStore, schema: TableSchema, directory: Path,
                reader: Reader) -> TableIndex:
    return TableIndex(schema, store.db, ChangeFeed(store.db), directory, reader)


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


def vec(seed: int) -> np.ndarray:
    return unit(np.random.default_rng(seed).standard_normal(DIM).astype(np.float32))


async def truth(store: TableStore, schema: TableSchema) -> dict[str, list[np.ndarray]]:
    """Every row's current vectors, read through the table store."""
    out = {}
    async for rows in store.iter_rows(schema, columns=["Title Embed", "Text Embed"]):
        for row in rows:
            out[row.id] = [unit(np.asarray(row.cells[c].value, np.float32))
                           for c in ("Title Embed", "Text Embed")
                           if row.cells[c].value is not None]
    return out


async def check(index: TableIndex, store: TableStore, schema: TableSchema) -> None:
    """The index answers exactly like a brute-force search over the database."""
    rows = await truth(store, schema)
    for seed in range(5):
        q = vec(1000 + seed)
        expected = sorted((min(float(1 - v @ q) for v in vs), rid)
                          for rid, vs in rows.items() if vs)[:5]
        found = index.search(q, 5, set(rows))  # small tables: exact
        assert [rid for rid, _ in found] == [rid for _, rid in expected]
        assert [d for _, d in found] == pytest.approx([d for d, _ in expected], abs=1e-5)


async def add(store: TableStore, schema: TableSchema, seeds: list[int]) -> list[str]:
    rows = await store.insert_rows(schema, [
        {"Title": f"t{s}", "Text Embed": vec(s).tobytes(), "Title Embed": vec(s + 500).tobytes()
         if s % 2 else None} for s in seeds])
    return [r.id for r in rows]


async def opened(store: TableStore, schema: TableSchema, directory: Path,
                 reader: Reader) -> TableIndex:
    index = table_index(store, schema, directory, reader)
    await index.open()
    await index.wait_built()
    return index


async def caught_up(index: TableIndex) -> None:
    index.dirty = True
    await index.refresh(0.0)
    await index.wait_built()


async def test_rebuild_then_catch_up_with_inserts_updates_and_deletes(
        store: TableStore, tmp_path: Path, reader: Reader) -> None:
    schema = await store.create_table(P, "knowledge", "kb", [])
    ids = await add(store, schema, list(range(20)))  # written before any index existed
    index = await opened(store, schema, tmp_path / "ix", reader)
    await check(index, store, schema)
    await add(store, schema, list(range(20, 30)))
    await store.write_cells(schema, ids[0], {"Text Embed": Cell(value=vec(77).tolist())})
    await store.write_cells(schema, ids[1], {"Title Embed": Cell(value=None)})
    await store.delete_rows(schema, ids[2:5])
    index.dirty = True
    await index.refresh(0.0)
    await check(index, store, schema)  # searchable before the graph has them
    await index.wait_built()
    await check(index, store, schema)
    assert all(len(c.parts) == 0 for c in index.columns.values())
    await index.close(save=False)


async def test_saved_index_reloads_at_its_watermark_and_replays_later_changes(
        store: TableStore, tmp_path: Path, reader: Reader) -> None:
    schema = await store.create_table(P, "knowledge", "kb", [])
    ids = await add(store, schema, list(range(15)))
    directory = tmp_path / "ix"
    index = await opened(store, schema, directory, reader)
    await caught_up(index)
    assert await index.save()
    assert not await index.save()  # nothing new
    saved = index.built
    await index.close(save=False)
    manifest = json.loads((directory / MANIFEST).read_text())
    assert manifest["watermark"] == saved and manifest["storage_id"] == schema.storage_id
    # Changes made while no index is open: found again through the feed.
    await store.delete_rows(schema, ids[:3])
    await add(store, schema, [40, 41])
    again = table_index(store, schema, directory, reader)
    loaded = again._load()
    assert loaded is not None and min(c.watermark for c in loaded.values()) == saved
    await again.open()
    await again.wait_built()
    assert again.cursor > saved
    await check(again, store, schema)
    await again.close(save=True)


async def test_an_index_ahead_of_its_database_is_rebuilt(store: TableStore, tmp_path: Path,
                                                        reader: Reader) -> None:
    """A backup's indexes may be saved after its database snapshot: the restored database
    then lacks changes the index holds, and the index must not answer with them."""
    import sqlalchemy as sa

    schema = await store.create_table(P, "knowledge", "kb", [])
    directory = tmp_path / "ix"
    index = await opened(store, schema, directory, reader)  # the feed follows the table
    await add(store, schema, list(range(10)))
    feed = ChangeFeed(store.db)
    snapshot = await feed.last_id()  # the database as the backup took it
    assert snapshot > 0
    later = await add(store, schema, [60, 61, 62])
    await caught_up(index)
    assert {rid for rid, _ in index.search(vec(60), 3)} & set(later)
    assert await index.save()  # the index as it was copied after the snapshot
    await index.close(save=False)
    # Back to the snapshot's state: the later rows and their changes were never written.
    async with store.db.write() as conn:
        await conn.execute(sa.text(f'DELETE FROM "{schema.storage_id}" WHERE id IN '
                                   f"({', '.join(repr(r) for r in later)})"))
        await conn.execute(sa.text("DELETE FROM rf_knowledge_changes WHERE id > :n"),
                           {"n": snapshot})
        if store.db.is_sqlite:
            await conn.execute(sa.text("UPDATE sqlite_sequence SET seq = :n WHERE name = "
                                       "'rf_knowledge_changes'"), {"n": snapshot})
        else:
            await conn.execute(sa.text("SELECT setval(pg_get_serial_sequence("
                                       "'rf_knowledge_changes', 'id'), :n)"), {"n": snapshot})
    assert await feed.last_id() == snapshot
    again = table_index(store, schema, directory, reader)
    assert again._load() is not None  # the files themselves are fine
    await again.open()
    await again.wait_built()
    await check(again, store, schema)
    assert not {rid for rid, _ in again.search(vec(60), 5)} & set(later)  # lost rows: gone
    assert not {rid for rid, _ in again.search_text("t60", 5)} & set(later)
    await again.close(save=False)


@pytest.mark.parametrize("damage", ["delete", "corrupt", "manifest"])
async def test_lost_or_corrupt_files_mean_a_rebuild(store: TableStore, tmp_path: Path,
                                                    damage: str, reader: Reader) -> None:
    schema = await store.create_table(P, "knowledge", "kb", [])
    await add(store, schema, list(range(12)))
    directory = tmp_path / "ix"
    index = await opened(store, schema, directory, reader)
    await index.close(save=True)
    graph = next(directory.glob("*.hnsw"))
    if damage == "delete":
        shutil.rmtree(directory)
    elif damage == "corrupt":
        graph.write_bytes(graph.read_bytes()[:100] + b"garbage")
    else:
        (directory / MANIFEST).write_text("{not json")
    await add(store, schema, [50])
    again = table_index(store, schema, directory, reader)
    assert again._load() is None
    await again.open()
    await again.wait_built()
    await check(again, store, schema)
    assert await again.save()
    await again.close(save=False)


async def test_a_rebuild_in_progress_is_never_saved(store: TableStore, tmp_path: Path,
                                                    reader: Reader) -> None:
    schema = await store.create_table(P, "knowledge", "kb", [])
    await add(store, schema, list(range(10)))
    index = table_index(store, schema, tmp_path / "ix", reader)
    index._kick = lambda: None  # type: ignore[method-assign]  # hold the builder back
    await index.open()
    assert index.building and index.built == -1
    assert not await index.save()
    assert not (tmp_path / "ix" / MANIFEST).exists()
    assert not list((tmp_path / "ix").glob("*.hnsw"))
    del index._kick
    await index.wait_built()
    assert await index.save()
    await index.close(save=False)


@pytest.mark.parametrize("rows", [8, 9, 10])
async def test_a_rebuild_of_whole_scan_pages_is_complete_and_saved(
        store: TableStore, tmp_path: Path, reader: Reader, rows: int,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # 8 rows are exactly two pages of 4: the scan's last page is a full one, and its part
    # must carry the head, or the graphs never count as complete and are never saved. The
    # builder is held back, as when it is busy with other tables.
    monkeypatch.setattr(table_index_module, "SCAN_BATCH", 4)
    schema = await store.create_table(P, "knowledge", "kb", [])
    await add(store, schema, list(range(rows)))
    index = table_index(store, schema, tmp_path / "ix", reader)
    index._kick = lambda: None  # type: ignore[method-assign]
    await index.open()
    del index._kick
    await index.wait_built()
    assert not index.building and index.built == index.cursor >= 0
    assert await index.save()
    await check(index, store, schema)
    await index.close(save=False)
    again = table_index(store, schema, tmp_path / "ix", reader)
    assert again._load() is not None


async def test_vectors_of_another_dimension_are_left_out(store: TableStore, tmp_path: Path,
                                                         reader: Reader) -> None:
    schema = await store.create_table(P, "knowledge", "kb", [])
    await add(store, schema, [1, 2])
    # Stored before embedding columns checked their size (the store refuses it now).
    odd, = await store.insert_rows(schema, [{"Title": "odd"}])
    from rowforge.server.tables.layout import ROW_ID, row_table, value_name

    table = row_table(schema)
    column = value_name(schema.column("Text Embed"))
    async with store.db.write() as conn:
        await conn.execute(table.update().where(table.c[ROW_ID] == odd.id).values(
            {column: np.asarray([1.0, 2.0, 3.0], "<f4").tobytes()}))
    index = await opened(store, schema, tmp_path / "ix", reader)
    assert index.skipped_vectors == 1
    assert odd.id not in {rid for rid, _ in index.search(vec(1), 10)}
    await index.close(save=False)


async def test_manager_forgets_deleted_tables_and_their_files(store: TableStore,
                                                              tmp_path: Path) -> None:
    schema = await store.create_table(P, "knowledge", "kb", [])
    await add(store, schema, [1, 2, 3])
    indexes = KnowledgeIndexes(store.db, tmp_path / "indexes")
    indexes.poll_interval_s = 3600  # no background passes in this test
    await indexes.start()
    try:
        assert [r for r, _ in await indexes.search(schema, vec(2), 1)] != []
        index = indexes.opened(schema.storage_id)
        assert index is not None
        await index.save()
        assert (tmp_path / "indexes" / schema.storage_id).is_dir()
        # In-process writes notify the manager: searchable on the next search.
        row, = await store.insert_rows(schema, [{"Text Embed": vec(9).tobytes()}])
        indexes.notify([schema.storage_id])
        assert (await indexes.search(schema, vec(9), 1))[0][0] == row.id
        await store.delete_table(P, "knowledge", "kb")
        with pytest.raises(NotFound):
            await indexes.check_exists(schema)  # what a failed read of the table calls
        assert indexes.opened(schema.storage_id) is None
        assert not (tmp_path / "indexes" / schema.storage_id).exists()
        # The periodic sweep finds deleted tables too.
        other = await store.create_table(P, "knowledge", "other", [])
        await add(store, other, [4])
        await indexes.search(other, vec(4), 1)
        await store.delete_table(P, "knowledge", "other")
        await indexes.sweep()
        assert indexes.opened(other.storage_id) is None
        assert await indexes.feed.head(other.storage_id) == 0
    finally:
        await indexes.stop()


async def test_manager_start_sweeps_leftovers_and_warms_up(store: TableStore,
                                                           tmp_path: Path) -> None:
    root = tmp_path / "indexes"
    (root / "ut_0123456789abcdef0123").mkdir(parents=True)  # a table that no longer exists
    schema = await store.create_table(P, "knowledge", "kb", [])
    await add(store, schema, [1])
    indexes = KnowledgeIndexes(store.db, root)
    indexes.poll_interval_s = 3600
    await indexes.start()
    try:
        assert not (root / "ut_0123456789abcdef0123").exists()
        for _ in range(200):
            if indexes.opened(schema.storage_id) is not None:
                break
            await asyncio.sleep(0.01)
        assert indexes.opened(schema.storage_id) is not None  # opened in the background
    finally:
        await indexes.stop()
    assert (root / schema.storage_id / MANIFEST).is_file()  # saved on stop


async def three_tables(store: TableStore) -> tuple[list[TableSchema], dict[str, list[str]]]:
    """Three knowledge tables of 40 rows each (row t*100+i is ``vec(t*100+i)``); their
    schemas and each one's row ids by storage id."""
    schemas, rows = [], {}
    for t in range(3):
        schema = await store.create_table(P, "knowledge", f"kb{t}", [])
        rows[schema.storage_id] = await add(store, schema, list(range(100 * t, 100 * t + 40)))
        schemas.append(schema)
    return schemas, rows


async def test_manager_makes_room_before_an_evicted_index_loads_again(
        store: TableStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    schemas, rows = await three_tables(store)
    indexes = KnowledgeIndexes(store.db, tmp_path / "indexes")
    indexes.poll_interval_s = 3600
    await indexes.start()
    try:
        # Size the budget for two of the three tables.
        await indexes.search(schemas[0], vec(0), 1)
        index = indexes.opened(schemas[0].storage_id)
        assert index is not None
        await index.wait_built()
        await asyncio.to_thread(index.lexical.release_writer)  # held for the next writes
        indexes.memory_budget = int(2.5 * index.memory_bytes())
        at_open: list[tuple[int, int]] = []
        real_open = TableIndex.open

        async def open_(self: TableIndex) -> None:
            at_open.append((indexes.memory_bytes(), indexes._sizes.get(self.storage_id, 0)))
            await real_open(self)

        monkeypatch.setattr(TableIndex, "open", open_)
        for _ in range(3):
            for t, schema in enumerate(schemas):
                seed = 100 * t + 7
                found = await indexes.search(schema, vec(seed), 1)
                assert found[0][0] == rows[schema.storage_id][7]  # right after a reload too
                built = indexes.opened(schema.storage_id)
                assert built is not None
                await built.wait_built()
        assert indexes.evictions >= 3
        reloads = [(resident, incoming) for resident, incoming in at_open if incoming]
        assert reloads
        for resident, incoming in reloads:  # room was made before each load
            assert resident + incoming <= indexes.memory_budget, (resident, incoming)
    finally:
        await indexes.stop()


async def test_first_opens_after_a_restart_make_room_for_their_saved_graphs(
        store: TableStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    schemas, rows = await three_tables(store)
    first = KnowledgeIndexes(store.db, tmp_path / "indexes")
    first.poll_interval_s = 3600
    sizes = {}
    try:
        for schema in schemas:
            index = await first.get(schema)
            await index.wait_built()
            await asyncio.to_thread(index.lexical.release_writer)
            sizes[schema.storage_id] = index.memory_bytes()
    finally:
        await first.stop()  # saves every graph
    for schema in schemas:  # what a restart reads before loading: the files' headers
        assert first._saved_bytes(schema) == sizes[schema.storage_id]

    # Restarted with room for two of the three: the warm-up opens what fits, then searches
    # of the third make room before it loads, never after.
    budget = int(2.5 * max(sizes.values()))
    indexes = KnowledgeIndexes(store.db, tmp_path / "indexes", memory_budget=budget)
    indexes.poll_interval_s = 3600
    at_open: list[tuple[int, str]] = []
    real_open = TableIndex.open

    async def open_(self: TableIndex) -> None:
        at_open.append((indexes.memory_bytes(), self.storage_id))
        await real_open(self)

    monkeypatch.setattr(TableIndex, "open", open_)
    await indexes.start()
    try:
        for _ in range(200):
            if len(at_open) >= 2 and not indexes._opening:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        assert len(at_open) == 2 and indexes.evictions == 0  # warm-up: what fits, no churn
        for t, schema in enumerate(schemas):
            found = await indexes.search(schema, vec(100 * t + 7), 1)
            assert found[0][0] == rows[schema.storage_id][7]
        assert indexes.evictions >= 1
        for resident, storage_id in at_open:  # room was made before each load
            assert resident + sizes[storage_id] <= budget, (resident, storage_id)
    finally:
        await indexes.stop()
