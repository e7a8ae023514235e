"""The fast row-write path of the table store (pre-rendered SQL, JSON state text, cached
current schemas) and full-text indexes built on a table's first search, on real SQLite and
PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.dialects import postgresql, sqlite

from rowforge.server.errors import Aborted
from rowforge.server.tables import fulltext, write_sql
from rowforge.server.tables.codec import cell_from_stored, state_text, state_to_json
from rowforge.server.tables.model import (
    Cell,
    CellStatus,
    CellUsage,
    Chunk,
    ColumnSchema,
    LLMGenConfig,
    References,
    TableSchema,
)
from rowforge.server.tables.store import RowQuery, TableStore

P = "default"


@pytest.fixture
def store(table_store: TableStore) -> TableStore:
    return table_store


async def action(store: TableStore, table_id: str = "t") -> TableSchema:
    return await store.create_table(P, "action", table_id, [
        ColumnSchema("name"), ColumnSchema("n", "int"), ColumnSchema("x", "float"),
        ColumnSchema("flag", "bool"),
        ColumnSchema("answer", gen_config=LLMGenConfig(prompt="Say ${name}"))])


async def has_fts_table(store: TableStore, schema: TableSchema) -> bool:
    async with store.db.read() as conn:
        found = await conn.scalar(sa.text(
            "SELECT 1 FROM sqlite_master WHERE name = :n").bindparams(
                n=fulltext.fts_name(schema)))
    return found is not None


# -- state text ----------------------------------------------------------------------------

cells = st.builds(
    Cell,
    value=st.none(),
    status=st.sampled_from(list(CellStatus)),
    error=st.sampled_from(["", "boom", 'quote " and \\ and \n and é']),
    usage=st.none() | st.builds(CellUsage, st.integers(0, 2**40), st.integers(0, 2**40)),
    references=st.none() | st.just(References("kb", "q", (Chunk("r", "T", "t\"x", 2, "f", 0.5),))),
    job=st.sampled_from(["", "job_0123"]),
)


@given(cells)
def test_state_text_is_the_json_of_the_state(cell: Cell) -> None:
    text = state_text(cell)
    state = state_to_json(cell)
    assert (None if text is None else json.loads(text)) == state
    # the table job that wrote a cell survives the round trip (a resumed job skips it)
    assert cell_from_stored(cell.value, state) == cell


# -- pre-rendered SQL ----------------------------------------------------------------------

def test_sql_is_rendered_for_each_driver_with_generated_names_only() -> None:
    schema = TableSchema(P, "action", "user's table; DROP TABLE x", columns=(
        ColumnSchema("a'; --", storage_name="c_1"), ColumnSchema("b", "int", storage_name="c_2")),
        storage_id="ut_abc")
    lite = write_sql.insert_sql(schema, sqlite.dialect(paramstyle="qmark"))
    assert lite.sql == ("INSERT INTO ut_abc (id, updated_at, c_1, s_1, c_2, s_2) "
                        "VALUES (?, ?, ?, ?, ?, ?)")
    pg = write_sql.insert_sql(schema, postgresql.asyncpg.dialect())
    assert pg.sql.endswith("VALUES ($1, $2, $3, $4, $5, $6)")
    update = write_sql.update_cells_sql("ut_abc", (("c_2", "s_2"),), postgresql.asyncpg.dialect())
    assert update == "UPDATE ut_abc SET updated_at = $1, c_2 = $2, s_2 = $3 WHERE id = $4"
    with pytest.raises(ValueError, match="paramstyle"):
        write_sql.update_cells_sql("ut_abc", (("c_2", "s_2"),), sqlite.dialect(paramstyle="named"))


# -- rows through the fast path ------------------------------------------------------------

async def test_inserted_rows_read_back_typed_with_their_states(store: TableStore) -> None:
    t = await action(store)
    given_rows = [{"name": "a", "n": 3.0, "x": 2, "flag": True},
                  {"name": None, "answer": "given by hand"}, {}]
    inserted = await store.insert_rows(t, given_rows)
    stored = await store.get_rows(t, [r.id for r in inserted])
    for row, back in zip(inserted, stored, strict=True):
        assert back.cells == row.cells
    first = stored[0].cells
    assert first["n"].value == 3 and isinstance(first["n"].value, int)
    assert first["x"].value == 2.0 and isinstance(first["x"].value, float)
    assert first["flag"].value is True
    assert first["answer"] == Cell(None, CellStatus.PENDING)
    assert stored[1].cells["answer"] == Cell("given by hand")  # given: DONE, not generated
    assert stored[2].cells["name"] == Cell(None)


async def test_generated_cells_store_value_status_usage_and_errors(store: TableStore) -> None:
    t = await action(store)
    rows = await store.insert_rows(t, [{"name": "a"}, {"name": "b"}, {"name": "c"}])
    await store.write_cells(t, rows[0].id, {"answer": Cell("hi", usage=CellUsage(5, 7))})
    await store.write_cells(t, rows[1].id, {"answer": Cell(None, CellStatus.ERROR, 'bad "x"')})
    await store.write_cells(t, rows[2].id, {"answer": Cell(None, CellStatus.RUNNING),
                                            "n": Cell(4), "flag": Cell("no")})
    a, b, c = await store.get_rows(t, [r.id for r in rows])
    assert a.cells["answer"] == Cell("hi", usage=CellUsage(5, 7))
    assert b.cells["answer"] == Cell(None, CellStatus.ERROR, 'bad "x"')
    assert c.cells["answer"] == Cell(None, CellStatus.RUNNING) and c.cells["n"].value == 4
    assert c.cells["flag"].status == CellStatus.ERROR and "dtype bool" in c.cells["flag"].error


async def test_a_write_with_a_stale_schema_sees_the_columns_changed_meanwhile(
        store: TableStore) -> None:
    stale = await action(store)
    await store.drop_columns(P, "action", "t", ["flag"])
    with pytest.raises(Aborted):  # the insert names a dropped column: nothing is written
        await store.insert_rows(stale, [{"name": "late"}])
    fresh = await store.get_table(P, "action", "t")
    assert await store.count_rows(fresh) == 0
    [row] = await store.insert_rows(fresh, [{"name": "ok"}])
    grown = await store.add_columns(P, "action", "t", [ColumnSchema("extra", "int")])
    await store.write_cells(fresh, row.id, {"answer": Cell("kept"), "flag": Cell(True)})
    [back] = await store.get_rows(grown, [row.id])
    assert back.cells["answer"].value == "kept" and back.cells["extra"] == Cell(None)
    await store.delete_table(P, "action", "t")
    await store.write_cells(fresh, row.id, {"answer": Cell("after delete")})  # ignored


# -- full-text index on first use ----------------------------------------------------------

async def test_action_tables_build_their_index_on_the_first_search(store: TableStore) -> None:
    t = await action(store)
    rows = await store.insert_rows(t, [{"name": "machine learning"}, {"name": "cooking"}])
    await store.write_cells(t, rows[1].id, {"answer": Cell("a machine did it")})
    lazy = store.db.is_sqlite
    if lazy:
        assert not await has_fts_table(store, t)
    page = await store.list_rows(t, RowQuery(search_query="machine"))
    assert {r.id for r in page.items} == {rows[0].id, rows[1].id}  # rows written before
    if lazy:
        assert await has_fts_table(store, t)
    more = await store.insert_rows(t, [{"name": "machine again"}])  # kept from now on
    await store.write_cells(t, rows[0].id, {"answer": Cell("unrelated")})
    await store.update_rows(t, {rows[1].id: {"name": "machine cooking"}})
    hits = await store.fulltext_search(t, "machine", limit=10, columns=["name"])
    assert {r for r, _ in hits} == {rows[0].id, rows[1].id, more[0].id}
    only_answer = await store.list_rows(t, RowQuery(search_query="machine",
                                                   search_columns=["answer"]))
    assert [r.id for r in only_answer.items] == [rows[1].id]


async def test_knowledge_tables_build_their_fts_index_only_for_list_rows(
        store: TableStore) -> None:
    kb = await store.create_table(P, "knowledge", "kb", [])
    rows = await store.insert_rows(kb, [{"Title": "Seine", "Text": "a river in Paris"}])
    if store.db.is_sqlite:  # hybrid search has its own BM25 index: no FTS5 upkeep at ingest
        assert not await has_fts_table(store, kb)
    page = await store.list_rows(kb, RowQuery(search_query="river"))
    assert [r.id for r in page.items] == [rows[0].id]
    more = await store.insert_rows(kb, [{"Title": "Spree", "Text": "a river in Berlin"}])
    page = await store.list_rows(kb, RowQuery(search_query="river"))
    assert {r.id for r in page.items} == {rows[0].id, more[0].id}


async def test_column_changes_before_and_after_the_first_search(store: TableStore) -> None:
    await action(store)
    t = await store.add_columns(P, "action", "t", [ColumnSchema("notes")])
    rows = await store.insert_rows(t, [{"name": "a", "notes": "zebra"}])
    assert [r.id for r in (await store.list_rows(t, RowQuery(search_query="zebra"))).items] \
        == [rows[0].id]
    t = await store.add_columns(P, "action", "t", [ColumnSchema("more")])
    await store.update_rows(t, {rows[0].id: {"more": "giraffe"}})
    assert (await store.list_rows(t, RowQuery(search_query="giraffe"))).total == 1
    t = await store.drop_columns(P, "action", "t", ["notes"])
    assert (await store.list_rows(t, RowQuery(search_query="zebra"))).total == 0
    assert (await store.list_rows(t, RowQuery(search_query="giraffe"))).total == 1
    t = await store.drop_columns(P, "action", "t", ["answer", "more"])
    t = await store.drop_columns(P, "action", "t", ["name"])  # no str column left
    assert not [c for c in t.columns if c.dtype == "str"]
    t = await store.add_columns(P, "action", "t", [ColumnSchema("back")])
    await store.update_rows(t, {rows[0].id: {"back": "okapi"}})
    assert (await store.list_rows(t, RowQuery(search_query="okapi"))).total == 1


async def test_knowledge_tables_and_copies_are_searchable(store: TableStore) -> None:
    kb = await store.create_table(P, "knowledge", "kb", [ColumnSchema("extra")])
    [chunk] = await store.insert_rows(kb, [{"Title": "t", "Text": "lemur", "extra": "ibis"}])
    kb = await store.drop_columns(P, "knowledge", "kb", ["extra"])
    assert [r for r, _ in await store.fulltext_search(kb, "lemur", limit=3)] == [chunk.id]
    assert await store.fulltext_search(kb, "ibis", limit=3) == []
    t = await action(store)
    await store.insert_rows(t, [{"name": "walrus"}])
    copy = await store.duplicate_table(P, "action", "t", "t2")
    assert (await store.list_rows(copy, RowQuery(search_query="walrus"))).total == 1
    assert (await store.list_rows(t, RowQuery(search_query="walrus"))).total == 1


# -- cells a stopped server left unfinished ------------------------------------------------

async def test_unfinished_cells_are_finished_as_errors(store: TableStore) -> None:
    t = await action(store)
    rows = await store.insert_rows(t, [{"name": "a"}, {"name": "b"}, {"name": "c"}])
    await store.write_cells(t, rows[0].id, {"answer": Cell("done", usage=CellUsage(1, 2))})
    await store.write_cells(t, rows[1].id, {"answer": Cell(None, CellStatus.RUNNING)})
    before = (await store.get_rows(t, [rows[2].id]))[0].update_time
    assert await store.finish_interrupted_cells() == 2  # rows[2] PENDING, rows[1] RUNNING
    done, running, pending = await store.get_rows(t, [r.id for r in rows])
    assert done.cells["answer"] == Cell("done", usage=CellUsage(1, 2))
    for row in (running, pending):
        assert row.cells["answer"] == Cell(None, CellStatus.ERROR,
                                           "interrupted: the server stopped before this cell "
                                           "finished")
        assert row.cells["name"].status == CellStatus.DONE
    assert pending.update_time > before
    assert await store.finish_interrupted_cells() == 0


async def test_only_rows_idle_long_enough_are_finished_when_asked(store: TableStore) -> None:
    t = await action(store)
    old, fresh = await store.insert_rows(t, [{"name": "old"}, {"name": "fresh"}])
    # Both rows share this insert time (µs since the epoch).
    cutoff = (fresh.update_time - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(
        microseconds=1)
    assert await store.finish_interrupted_cells(updated_before_us=cutoff) == 0
    await store.write_cells(t, fresh.id, {"answer": Cell(None, CellStatus.RUNNING)})
    assert await store.finish_interrupted_cells(updated_before_us=cutoff + 1) == 1
    got = {r.id: r.cells["answer"].status for r in await store.get_rows(t, [old.id, fresh.id])}
    assert got == {old.id: CellStatus.ERROR, fresh.id: CellStatus.RUNNING}


async def test_start_finishes_unfinished_cells_on_sqlite_only(store: TableStore) -> None:
    t = await action(store)
    [row] = await store.insert_rows(t, [{"name": "a"}])
    await store.start()
    [got] = await store.get_rows(t, [row.id])
    expected = CellStatus.ERROR if store.db.is_sqlite else CellStatus.PENDING
    assert got.cells["answer"].status == expected
