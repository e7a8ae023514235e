"""TableStore against real SQLite and PostgreSQL: schemas, migrations, rows, filters, paging,
full-text search, group-committed cell writes and concurrency."""

from __future__ import annotations

import asyncio
import random

import pytest

from rowforge.server.errors import (
    Aborted,
    AlreadyExists,
    InvalidArgument,
    NotFound,
)
from rowforge.server.tables.model import (
    Cell,
    CellStatus,
    CellUsage,
    Chunk,
    ColumnSchema,
    DanglingReference,
    LLMGenConfig,
    PythonGenConfig,
    RAGParams,
    References,
    TableSchema,
)
from rowforge.server.tables.store import RowQuery, TableStore

P = "default"


@pytest.fixture
def store(table_store: TableStore) -> TableStore:
    return table_store


def llm(prompt: str, **kw: object) -> LLMGenConfig:
    return LLMGenConfig(prompt=prompt, **kw)  # type: ignore[arg-type]


async def action(store: TableStore, table_id: str = "t") -> TableSchema:
    return await store.create_table(P, "action", table_id, [
        ColumnSchema("name"), ColumnSchema("n", "int"), ColumnSchema("x", "float"),
        ColumnSchema("flag", "bool"), ColumnSchema("answer", gen_config=llm("Say ${name}"))])


async def values(store: TableStore, schema: TableSchema, column: str, **query: object) -> list:
    page = await store.list_rows(schema, RowQuery(**query))  # type: ignore[arg-type]
    return [r.cells[column].value for r in page.items]


# -- tables --------------------------------------------------------------------------------

async def test_create_get_and_the_fixed_columns_of_each_type(store: TableStore) -> None:
    t = await action(store)
    assert (await store.get_table(P, "action", "t")).column_ids == [
        "name", "n", "x", "flag", "answer"]
    kt = await store.create_table(P, "knowledge", "kb", [ColumnSchema("extra")])
    assert kt.column_ids == ["Title", "Title Embed", "Text", "Text Embed", "File ID", "Page",
                             "extra"]
    assert kt.embedding_model == "rowforge/embed"
    assert all(c.system for c in kt.columns[:6]) and not kt.columns[6].system
    chat = await store.create_table(P, "chat", "c", [
        ColumnSchema("User"), ColumnSchema("AI", gen_config=llm(""))])
    assert chat.column_ids == ["User", "AI"]
    assert len({t.storage_id, kt.storage_id, chat.storage_id}) == 3
    assert t.storage_id.startswith("ut_") and "t" not in t.storage_id[3:].replace("t", "")


async def test_create_refusals_write_nothing(store: TableStore) -> None:
    await action(store)
    with pytest.raises(AlreadyExists) as err:
        await action(store)
    assert err.value.reason == "TABLE_ALREADY_EXISTS"
    with pytest.raises(InvalidArgument):
        await store.create_table(P, "action", "bad/id", [ColumnSchema("a")])
    with pytest.raises(InvalidArgument):
        await store.create_table(P, "chat", "c", [ColumnSchema("User")])
    with pytest.raises(InvalidArgument):
        await store.create_table(P, "knowledge", "k", [ColumnSchema("Title")])
    with pytest.raises(NotFound) as nf:
        await store.create_table(P, "action", "r", [
            ColumnSchema("q"), ColumnSchema("a", gen_config=llm("${q}", rag_params=RAGParams(
                "nope")))])
    assert nf.value.reason == "KNOWLEDGE_TABLE_NOT_FOUND"
    page = await store.list_tables(P, "action")
    assert [s.id for s in page.items] == ["t"]
    assert [s.id for s in (await store.list_tables(P, "chat")).items] == []


async def test_other_projects_tables_are_not_found(store: TableStore) -> None:
    await action(store)
    with pytest.raises(NotFound) as err:
        await store.get_table("other", "action", "t")
    assert err.value.reason == "TABLE_NOT_FOUND"
    with pytest.raises(NotFound):
        await store.get_table(P, "chat", "t")  # ids are per type
    with pytest.raises(NotFound):
        await store.delete_table("other", "action", "t")


async def test_list_tables_pages_prefix_and_counts(store: TableStore) -> None:
    for name in ["b2", "a1", "B1", "c", "b10", "a2"]:
        await store.create_table(P, "action", name, [ColumnSchema("v")])
    schema = await store.get_table(P, "action", "a1")
    await store.insert_rows(schema, [{"v": "x"}, {"v": "y"}])
    first = await store.list_tables(P, "action", limit=4, count_rows=True)
    assert [s.id for s in first.items] == ["B1", "a1", "a2", "b10"] and first.total == 6
    assert first.num_rows is not None and first.num_rows[schema.storage_id] == 2
    rest = await store.list_tables(P, "action", limit=4, page_token=first.next_page_token)
    assert [s.id for s in rest.items] == ["b2", "c"] and rest.next_page_token == ""
    assert [s.id for s in (await store.list_tables(P, "action", offset=5)).items] == ["c"]
    b = await store.list_tables(P, "action", prefix="b")
    assert [s.id for s in b.items] == ["B1", "b10", "b2"] and b.total == 3
    with pytest.raises(InvalidArgument) as err:
        await store.list_tables(P, "action", prefix="a", page_token=first.next_page_token)
    assert err.value.reason == "PAGE_TOKEN_MISMATCH"
    for bad in ({"limit": 101}, {"limit": -1}, {"offset": -1}, {"page_token": "garbage!"}):
        with pytest.raises(InvalidArgument):
            await store.list_tables(P, "action", **bad)  # type: ignore[arg-type]


async def test_duplicate_with_and_without_rows(store: TableStore) -> None:
    src = await action(store, "src")
    await store.insert_rows(src, [{"name": "alpha", "n": 1}, {"name": "beta", "n": 2}])
    copy = await store.duplicate_table(P, "action", "src")
    assert copy.id == "src_copy_1" and copy.column_ids == src.column_ids
    assert await values(store, copy, "name") == ["alpha", "beta"]
    assert (await store.list_rows(copy, RowQuery(search_query="beta"))).total == 1
    empty = await store.duplicate_table(P, "action", "src", include_data=False)
    assert empty.id == "src_copy_2" and await store.count_rows(empty) == 0
    await store.insert_rows(copy, [{"name": "gamma"}])  # sequence continues after the copy
    assert await values(store, copy, "name") == ["alpha", "beta", "gamma"]
    assert await store.count_rows(src) == 2
    with pytest.raises(AlreadyExists):
        await store.duplicate_table(P, "action", "src", "src_copy_1")


async def test_rename_and_delete_tables(store: TableStore) -> None:
    t = await action(store)
    await store.insert_rows(t, [{"name": "kept"}])
    await action(store, "other")
    with pytest.raises(AlreadyExists):
        await store.rename_table(P, "action", "t", "other")
    renamed = await store.rename_table(P, "action", "t", "t2")
    assert renamed.storage_id == t.storage_id
    assert await values(store, renamed, "name") == ["kept"]
    with pytest.raises(NotFound):
        await store.get_table(P, "action", "t")
    await store.delete_table(P, "action", "t2")
    with pytest.raises(NotFound):
        await store.get_table(P, "action", "t2")
    again = await action(store, "t2")  # a fresh, empty table under the old id
    assert await store.count_rows(again) == 0


async def test_knowledge_tables_used_by_rag_columns(store: TableStore) -> None:
    await store.create_table(P, "knowledge", "kb", [])
    await store.create_table(P, "action", "qa", [
        ColumnSchema("q"),
        ColumnSchema("a", gen_config=llm("${q}", rag_params=RAGParams("kb", k=2)))])
    await store.rename_table(P, "knowledge", "kb", "kb2")
    qa = await store.get_table(P, "action", "qa")
    assert qa.columns[1].gen_config.rag_params.table_id == "kb2"  # type: ignore[union-attr]
    assert await store.dangling_references(qa) == []
    # Deleting a used knowledge table leaves the column dangling; the table's other columns
    # still change, but no column may start using a missing table.
    await store.delete_table(P, "knowledge", "kb2")
    assert await store.dangling_references(qa) == [DanglingReference("a", "kb2")]
    qa = await store.add_columns(P, "action", "qa", [ColumnSchema("note")])
    qa = await store.rename_columns(P, "action", "qa", {"a": "answer"})
    assert await store.dangling_references(qa) == [DanglingReference("answer", "kb2")]
    with pytest.raises(NotFound) as missing:
        await store.update_gen_config(P, "action", "qa", {"note": llm(
            "${q}", rag_params=RAGParams("kb2"))})
    assert missing.value.reason == "KNOWLEDGE_TABLE_NOT_FOUND"
    await store.update_gen_config(P, "action", "qa", {"answer": llm("${q}")})
    assert await store.dangling_references(await store.get_table(P, "action", "qa")) == []


# -- columns -------------------------------------------------------------------------------

async def test_add_drop_rename_reorder_columns(store: TableStore) -> None:
    t = await action(store)
    await store.insert_rows(t, [{"name": "a", "n": 1}])
    t = await store.add_columns(P, "action", "t", [
        ColumnSchema("notes"), ColumnSchema("twice", "int", PythonGenConfig("row['twice']=1"))])
    assert t.column_ids[-2:] == ["notes", "twice"] and t.columns[-1].storage_name == "c_7"
    [row] = await store.insert_rows(t, [{"name": "b", "notes": "hello there"}])
    assert (await store.list_rows(t, RowQuery(search_query="hello"))).total == 1
    with pytest.raises(InvalidArgument) as err:
        await store.drop_columns(P, "action", "t", ["name"])
    assert err.value.reason == "COLUMN_IN_USE" and "'answer'" in err.value.message
    t = await store.drop_columns(P, "action", "t", ["notes", "x"])
    assert "notes" not in t.column_ids
    assert (await store.get_rows(t, [row.id]))[0].cells["name"].value == "b"
    assert (await store.list_rows(t, RowQuery(search_query="b"))).total == 1
    t = await store.add_columns(P, "action", "t", [ColumnSchema("notes", "int")])
    assert t.columns[-1].storage_name == "c_8"  # names are never reused
    assert (await store.get_rows(t, [row.id]))[0].cells["notes"].value is None
    t = await store.rename_columns(P, "action", "t", {"name": "title", "n": "count"})
    answer = t.column("answer")
    assert answer is not None and answer.gen_config.prompt == "Say ${title}"  # type: ignore[union-attr]
    assert await values(store, t, "title") == ["a", "b"]
    with pytest.raises(InvalidArgument) as err:
        await store.reorder_columns(P, "action", "t", ["answer", "title", "count", "flag", "twice",
                                                       "notes"])
    assert "'answer'" in err.value.message and "not to its left" in err.value.message
    t = await store.reorder_columns(P, "action", "t", ["count", "title", "answer", "flag",
                                                       "twice", "notes"])
    assert t.column_ids[:3] == ["count", "title", "answer"]
    t = await store.update_gen_config(P, "action", "t", {"answer": None, "flag": None})
    assert t.column("answer").gen_config is None  # type: ignore[union-attr]


async def test_column_change_refusals_change_nothing(store: TableStore) -> None:
    t = await action(store)
    cases = [
        store.add_columns(P, "action", "t", [ColumnSchema("NAME")]),
        store.add_columns(P, "action", "t", [ColumnSchema("id")]),
        store.add_columns(P, "action", "t", [ColumnSchema("z", gen_config=llm("${zz}"))]),
        store.add_columns(P, "action", "t", [ColumnSchema("z", "int", gen_config=llm("hi"))]),
        store.drop_columns(P, "action", "t", ["missing"]),
        store.rename_columns(P, "action", "t", {"name": "n"}),
        store.rename_columns(P, "action", "t", {"name": "Updated at"}),
        store.rename_columns(P, "action", "t", {"nope": "x"}),
        store.reorder_columns(P, "action", "t", ["name"]),
        store.update_gen_config(P, "action", "t", {"answer": llm("${answer}")}),
        store.update_gen_config(P, "action", "t", {"n": llm("${name}")}),
    ]
    for case in cases:
        with pytest.raises(InvalidArgument):
            await case
    with pytest.raises(NotFound):
        await store.update_gen_config(P, "action", "t", {"answer": llm("x", model="no/model")})
    assert await store.get_table(P, "action", "t") == t


async def test_fixed_columns_are_protected(store: TableStore) -> None:
    await store.create_table(P, "knowledge", "kb", [])
    await store.create_table(P, "chat", "c", [ColumnSchema("User"),
                                              ColumnSchema("AI", gen_config=llm(""))])
    for call in (store.drop_columns(P, "knowledge", "kb", ["Title"]),
                 store.rename_columns(P, "knowledge", "kb", {"Text": "Body"}),
                 store.update_gen_config(P, "knowledge", "kb", {"Text Embed": None}),
                 store.drop_columns(P, "chat", "c", ["AI"]),
                 store.update_gen_config(P, "chat", "c", {"AI": None})):
        with pytest.raises(InvalidArgument):
            await call


# -- rows ----------------------------------------------------------------------------------

async def test_insert_types_values_and_states(store: TableStore) -> None:
    t = await action(store)
    rows = await store.insert_rows(t, [
        {"name": "a", "n": 3.0, "x": 1, "flag": True},
        {"name": None, "answer": "given by hand"},
    ])
    assert rows[0].id < rows[1].id
    assert rows[0].cells["n"].value == 3 and rows[0].cells["x"].value == 1.0
    assert rows[0].cells["answer"].status == CellStatus.PENDING
    assert rows[1].cells["answer"] == Cell("given by hand")
    stored = await store.get_rows(t, [rows[1].id, rows[0].id])
    assert [r.id for r in stored] == [rows[1].id, rows[0].id]
    assert stored[1].cells["n"].value == 3 and stored[1].cells["flag"].value is True
    assert stored[1].cells["answer"].status == CellStatus.PENDING
    assert stored[0].cells["answer"].status == CellStatus.DONE


@pytest.mark.parametrize("row, field", [
    ({"n": 3.5}, "data[1].n"), ({"name": 5}, "data[1].name"), ({"flag": "yes"}, "data[1].flag"),
    ({"x": "1.5"}, "data[1].x"), ({"nope": 1}, "data[1].nope"), ({"ID": "x"}, "data[1].ID"),
    ({"n": 2**70}, "data[1].n"), ({"name": "a\x00b"}, "data[1].name"),
])
async def test_invalid_rows_write_nothing(store: TableStore, row: dict, field: str) -> None:
    t = await action(store)
    with pytest.raises(InvalidArgument) as err:
        await store.insert_rows(t, [{"name": "fine"}, row])
    assert err.value.field_violations[0].field == field
    assert await store.count_rows(t) == 0


async def test_file_columns_need_uris(store: TableStore) -> None:
    t = await store.create_table(P, "action", "f", [ColumnSchema("img", "image")])
    await store.insert_rows(t, [{"img": "file://abc"}, {"img": None}])
    with pytest.raises(InvalidArgument):
        await store.insert_rows(t, [{"img": "/etc/passwd"}])
    assert await store.file_references(P, "file://abc") == ["f"]
    assert await store.file_references(P, "file://other") == []
    assert await store.file_references("other", "file://abc") == []


async def test_write_cells_group_commits_concurrent_writes(store: TableStore) -> None:
    t = await action(store)
    rows = await store.insert_rows(t, [{"name": f"r{i}"} for i in range(120)])
    refs = References("kb", "q", (Chunk("r1", "T", "text", page=2, score=0.5),),
                      query_model="rowforge/chat", query_usage=CellUsage(20, 2))
    await asyncio.gather(*[
        store.write_cells(t, r.id, {"answer": Cell(f"out {i}", CellStatus.DONE,
                                                   usage=CellUsage(3, 4), references=refs)})
        for i, r in enumerate(rows)])
    writer = store.rows.writer
    assert writer.flushes < 20  # 120 concurrent calls shared a few transactions
    got = await store.get_rows(t, [rows[7].id])
    cell = got[0].cells["answer"]
    assert cell.value == "out 7" and cell.usage == CellUsage(3, 4) and cell.references == refs
    assert got[0].update_time > rows[7].update_time


async def test_write_cells_last_write_wins_and_bad_values_fail_the_cell(store: TableStore) -> None:
    t = await store.create_table(P, "action", "w", [
        ColumnSchema("q"), ColumnSchema("n", "int", PythonGenConfig("row['n'] = 1")),
        ColumnSchema("s", gen_config=llm("${q}"))])
    [row] = await store.insert_rows(t, [{"q": "x"}])
    await asyncio.gather(
        store.write_cells(t, row.id, {"s": Cell(None, CellStatus.RUNNING)}),
        store.write_cells(t, row.id, {"s": Cell("done", CellStatus.DONE),
                                      "n": Cell("not a number", CellStatus.DONE)}))
    [got] = await store.get_rows(t, [row.id])
    assert got.cells["s"] == Cell("done", CellStatus.DONE)
    assert got.cells["n"].status == CellStatus.ERROR and "dtype int" in got.cells["n"].error


async def test_write_cells_ignores_deleted_rows_and_dropped_columns(store: TableStore) -> None:
    t = await action(store)
    rows = await store.insert_rows(t, [{"name": "a"}, {"name": "b"}])
    await store.delete_rows(t, [rows[0].id])
    await store.write_cells(t, rows[0].id, {"answer": Cell("late")})
    stale = t
    t = await store.update_gen_config(P, "action", "t", {"answer": None})
    t = await store.drop_columns(P, "action", "t", ["answer"])
    await store.write_cells(stale, rows[1].id, {"answer": Cell("late"), "n": Cell(5)})
    [got] = await store.get_rows(t, [rows[1].id])
    assert got.cells["n"].value == 5 and "answer" not in got.cells


async def test_history_is_oldest_first_before_a_row(store: TableStore) -> None:
    t = await action(store)
    rows = await store.insert_rows(t, [{"name": f"m{i}"} for i in range(6)])
    before = await store.history(t, before_row_id=rows[4].id, columns=["name"], limit=3)
    assert [r.cells["name"].value for r in before] == ["m1", "m2", "m3"]
    assert set(before[0].cells) == {"name"}
    everything = await store.history(t, before_row_id=None, columns=["name"])
    assert len(everything) == 6
    with pytest.raises(NotFound) as err:
        await store.get_rows(t, [rows[0].id, "missing-id"])
    assert err.value.reason == "ROW_NOT_FOUND" and "missing-id" in err.value.message


async def test_list_rows_filters_on_the_database(store: TableStore) -> None:
    t = await action(store)
    await store.insert_rows(t, [
        {"name": "Apple pie", "n": 1, "x": 0.5, "flag": True},
        {"name": "apple", "n": 2, "x": 1.5, "flag": False},
        {"name": "banana_split", "n": 3, "flag": None},
        {"name": None, "n": None, "x": -1.0},
    ])
    assert await values(store, t, "name", where="\"name\" LIKE 'A%'") == ["Apple pie"]
    assert await values(store, t, "name", where="\"name\" ILIKE 'a%'") == ["Apple pie", "apple"]
    assert await values(store, t, "name", where="\"name\" LIKE '%\\_%'") == ["banana_split"]
    assert await values(store, t, "n", where="\"n\" IN (1, 3) OR \"x\" < 0") == [1, 3, None]
    assert await values(store, t, "n", where="\"n\" BETWEEN 2 AND 3 AND NOT \"flag\"") == [2]
    assert await values(store, t, "n", where="\"flag\"") == [1]
    assert await values(store, t, "n", where="\"name\" IS NULL") == [None]
    assert await values(store, t, "n", where="\"x\" >= 1") == [2]
    assert await values(store, t, "n", where="\"n\" > 1.5") == [2, 3]
    page = await store.list_rows(t, RowQuery(where="\"n\" >= 2", limit=1))
    assert page.total == 2 and len(page.items) == 1
    rows = await store.list_rows(t, RowQuery())
    some = rows.items[1].id
    assert await values(store, t, "n", where=f"\"ID\" = '{some}'") == [2]
    stamp = rows.items[0].update_time.isoformat()
    assert len(await values(store, t, "n", where=f"\"Updated at\" >= '{stamp}'")) == 4
    assert await values(store, t, "n", where="\"Updated at\" < '2000-01-01T00:00:00Z'") == []


async def test_list_rows_columns_and_limits(store: TableStore) -> None:
    t = await action(store)
    await store.insert_rows(t, [{"name": "a"}])
    page = await store.list_rows(t, RowQuery(columns=["n", "ID", "Updated at"]))
    assert set(page.items[0].cells) == {"n"}
    for bad in (RowQuery(limit=101), RowQuery(limit=-1), RowQuery(offset=-1),
                RowQuery(columns=["nope"]), RowQuery(order_by="nope"),
                RowQuery(where="\"nope\" = 1"), RowQuery(search_query="a", search_columns=["n"]),
                RowQuery(page_token="AAAA")):
        with pytest.raises(InvalidArgument):
            await store.list_rows(t, bad)


@pytest.mark.parametrize("order_by", ["", "n", "name", "x", "flag", "Updated at"])
@pytest.mark.parametrize("descending", [False, True])
async def test_keyset_pages_walk_the_same_order_as_one_sort(store: TableStore, order_by: str,
                                                            descending: bool) -> None:
    t = await action(store)
    rng = random.Random(7)
    names = ["a", "B", "b", "é", "z", None]
    await store.insert_rows(t, [
        {"name": rng.choice(names), "n": rng.choice([1, 2, 3, None]),
         "x": rng.choice([0.5, -2.0, None]), "flag": rng.choice([True, False, None])}
        for _ in range(23)])
    full = await store.list_rows(t, RowQuery(order_by=order_by, descending=descending))
    seen, token = [], ""
    while True:
        page = await store.list_rows(t, RowQuery(order_by=order_by, descending=descending,
                                                 limit=4, page_token=token))
        seen += [r.id for r in page.items]
        token = page.next_page_token
        if not token:
            break
    assert seen == [r.id for r in full.items]
    column = {"": None, "Updated at": None}.get(order_by, order_by)
    if column:
        keys = [r.cells[column].value for r in full.items]
        present = [k for k in keys if k is not None]
        assert present == sorted(present, reverse=descending)
        nulls_at = [i for i, k in enumerate(keys) if k is None]
        expected = (list(range(len(nulls_at))) if descending
                    else list(range(len(keys) - len(nulls_at), len(keys))))
        assert nulls_at == expected  # NULLs last ascending, first descending
    offset_page = await store.list_rows(t, RowQuery(order_by=order_by, descending=descending,
                                                    offset=4, limit=4))
    assert [r.id for r in offset_page.items] == seen[4:8]
    first = await store.list_rows(t, RowQuery(order_by=order_by, descending=descending, limit=4))
    with pytest.raises(InvalidArgument) as err:
        await store.list_rows(t, RowQuery(order_by=order_by, descending=not descending,
                                          page_token=first.next_page_token))
    assert err.value.reason == "PAGE_TOKEN_MISMATCH"


async def test_full_text_search_follows_writes(store: TableStore) -> None:
    t = await action(store)
    rows = await store.insert_rows(t, [
        {"name": "machine learning basics"}, {"name": "deep learning"},
        {"name": "cooking for machines"}, {"name": "Machine-learning at scale, machine!"}])
    assert (await store.list_rows(t, RowQuery(search_query="machine learning"))).total == 2
    await store.write_cells(t, rows[1].id, {"answer": Cell("a machine wrote this")})
    hits = await store.list_rows(t, RowQuery(search_query="machine learning"))
    assert hits.total == 3
    only_name = await store.list_rows(t, RowQuery(search_query="machine learning",
                                                  search_columns=["name"]))
    assert only_name.total == 2
    await store.update_rows(t, {rows[0].id: {"name": "nothing relevant"}})
    await store.delete_rows(t, [rows[3].id])
    assert (await store.list_rows(t, RowQuery(search_query="machine learning"))).total == 1
    assert (await store.list_rows(t, RowQuery(search_query="!!! ???"))).total == 0
    ranked = await store.fulltext_search(t, "machine", limit=10)
    assert [r for r, _ in ranked] == [rows[1].id]  # no stemming: "machines" is another word
    assert all(score > 0 for _, score in ranked)
    assert await store.fulltext_search(t, "\"; DROP TABLE x; --", limit=5) == []


async def test_fulltext_ranks_better_matches_first(store: TableStore) -> None:
    t = await store.create_table(P, "knowledge", "kb", [])
    rows = await store.insert_rows(t, [
        {"Title": "gardening", "Text": "roses and tulips"},
        {"Title": "python", "Text": "python python snakes python programming"},
        {"Title": "misc", "Text": "a note that mentions python once among many other words"},
    ])
    ranked = await store.fulltext_search(t, "python", limit=5)
    assert [r for r, _ in ranked] == [rows[1].id, rows[2].id]
    assert ranked[0][1] > ranked[1][1]
    by_title = await store.fulltext_search(t, "python", limit=5, columns=["Title"])
    assert [r for r, _ in by_title] == [rows[1].id]
    filtered = await store.fulltext_search(t, "python", limit=5, where="\"Title\" = 'misc'")
    assert [r for r, _ in filtered] == [rows[2].id]


async def test_update_rows_is_typed_and_all_or_nothing(store: TableStore) -> None:
    t = await action(store)
    a, b = await store.insert_rows(t, [{"name": "a", "n": 1}, {"name": "b"}])
    await store.write_cells(t, a.id, {"answer": Cell(None, CellStatus.ERROR, error="boom")})
    assert await store.update_rows(t, {a.id: {"n": 5.0, "answer": "edited"},
                                       b.id: {"flag": True}}) == 2
    got = {r.id: r for r in await store.get_rows(t, [a.id, b.id])}
    assert got[a.id].cells["n"].value == 5
    assert got[a.id].cells["answer"] == Cell("edited")  # error cleared, not regenerated
    assert got[b.id].cells["flag"].value is True
    with pytest.raises(NotFound):
        await store.update_rows(t, {a.id: {"n": 9}, "missing": {"n": 9}})
    with pytest.raises(InvalidArgument):
        await store.update_rows(t, {a.id: {"n": "nine"}})
    with pytest.raises(InvalidArgument):
        await store.update_rows(t, {a.id: {}})
    assert (await store.get_rows(t, [a.id]))[0].cells["n"].value == 5


async def test_delete_rows_by_ids_and_where(store: TableStore) -> None:
    t = await action(store)
    rows = await store.insert_rows(t, [{"n": i} for i in range(6)])
    assert await store.delete_rows(t, [rows[0].id, "unknown"], "\"n\" >= 4") == 3
    assert await values(store, t, "n") == [1, 2, 3]
    assert await store.delete_rows(t, where="\"n\" = 2") == 1
    with pytest.raises(InvalidArgument):
        await store.delete_rows(t)
    with pytest.raises(InvalidArgument):
        await store.delete_rows(t, where="1 = 1; DROP TABLE x")
    assert await store.count_rows(t) == 2


async def test_concurrent_writers_readers_and_a_migration(store: TableStore) -> None:
    t = await action(store)

    async def writer(k: int) -> int:
        done = 0
        for i in range(5):
            rows = await store.insert_rows(t, [{"name": f"w{k}-{i}", "n": i}] * 4)
            await asyncio.gather(*[store.write_cells(t, r.id, {"answer": Cell("ok")})
                                   for r in rows])
            done += len(rows)
        return done

    async def reader() -> int:
        pages = 0
        for _ in range(10):
            try:
                page = await store.list_rows(t, RowQuery(where="\"n\" >= 0", order_by="name"))
            except Aborted:
                continue
            assert all(r.cells["name"].value for r in page.items)
            pages += 1
        return pages

    async def migrate() -> None:
        await store.add_columns(P, "action", "t", [ColumnSchema("late", "int")])

    results = await asyncio.gather(*[writer(k) for k in range(4)], reader(), reader(), migrate())
    assert sum(results[:4]) == 80
    assert await store.count_rows(t) == 80
    fresh = await store.get_table(P, "action", "t")
    page = await store.list_rows(fresh, RowQuery(where="\"answer\" = 'ok'"))
    assert page.total == 80


async def test_cached_counts_follow_every_kind_of_write(store: TableStore) -> None:
    t = await action(store)
    rows = await store.insert_rows(t, [{"n": i} for i in range(4)])

    async def total() -> int:
        return (await store.list_rows(t, RowQuery(where="\"answer\" = 'yes' OR \"n\" > 2"))).total

    assert await total() == 1
    assert await total() == 1  # served again (from the cache on SQLite)
    await store.insert_rows(t, [{"n": 9}])
    assert await total() == 2
    await store.write_cells(t, rows[0].id, {"answer": Cell("yes")})
    assert await total() == 3
    await store.update_rows(t, {rows[1].id: {"n": 10}})
    assert await total() == 4
    await store.delete_rows(t, [rows[1].id])
    assert await total() == 3
    t = await store.rename_columns(P, "action", "t", {"name": "title"})
    assert await total() == 3


async def test_a_cancelled_cell_write_is_still_stored(store: TableStore) -> None:
    t = await action(store)
    [row] = await store.insert_rows(t, [{"name": "a"}])
    task = asyncio.create_task(store.write_cells(t, row.id, {"answer": Cell("kept")}))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await store.close()  # waits for queued writes
    assert (await store.get_rows(t, [row.id]))[0].cells["answer"].value == "kept"
