"""The BM25 index (tantivy): exact top-k against a brute-force BM25 over the same tokens, every
query word kept (common ones too), CJK text, analyzers, filters at 50% / 5% / 0.1%
selectivity, persistence with a watermark, recovery; then kept by TableIndex from the change
feed on real SQLite and PostgreSQL, and searched through HybridSearcher."""

from __future__ import annotations

import asyncio
import json
import random
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import pytest

from rowforge.server.errors import InvalidArgument
from rowforge.server.knowledge import lexical_index
from rowforge.server.knowledge.indexes import KnowledgeIndexes
from rowforge.server.knowledge.lexical_index import (
    ANALYZERS,
    MANIFEST,
    LexicalIndex,
    build_analyzer,
    check_analyzer,
)
from rowforge.server.knowledge.reader import Reader
from rowforge.server.knowledge.search import HybridSearcher
from rowforge.server.knowledge.table_index import TableIndex
from rowforge.server.providers.registry import ModelRegistry
from rowforge.server.tables.change_feed import ChangeFeed
from rowforge.server.tables.model import Cell, TableSchema
from rowforge.server.tables.store import TableStore
from tests.support.bm25_oracle import BM25Oracle, quantized_length, same_ranking

P = "default"
COMMON = ["the", "of", "and", "to", "in", "is"]


def corpus(n: int, seed: int = 0) -> dict[str, list[str]]:
    """``n`` rows of (title, text): Zipf words, the common ones in almost every row."""
    rng = np.random.default_rng(seed)
    words = COMMON + [f"w{i}x" for i in range(3000)]
    p = 1.0 / np.arange(1, len(words) + 1) ** 1.1
    draws = rng.choice(len(words), size=(n, 40), p=p / p.sum())
    lengths = rng.integers(5, 40, size=n)  # varied lengths: the norms matter
    return {f"r{i:05d}": [f"Doc w{i % 50}x", " ".join(words[j] for j in row[:lengths[i]])]
            for i, row in enumerate(draws)}


def oracle_of(index: LexicalIndex, rows: dict[str, list[str]],
              vocabulary: set[str] | None = None) -> BM25Oracle:
    return BM25Oracle(((rid, [t for text in texts for t in index.analyzer.analyze(text)])
                       for rid, texts in rows.items()), vocabulary)


@pytest.fixture
def index(tmp_path: Path) -> Iterator[LexicalIndex]:
    ix = LexicalIndex(tmp_path / "lexical")
    assert ix.open() is None  # nothing saved yet
    yield ix
    ix.close()


def test_quantized_lengths_follow_tantivys_scale() -> None:
    assert [quantized_length(x) for x in (0, 1, 24, 40, 41, 42, 43, 60, 63, 100)] == \
        [0, 1, 24, 40, 40, 42, 42, 60, 60, 96]


def test_top_k_is_exact_bm25_over_every_query_word(index: LexicalIndex) -> None:
    rows = corpus(3000)
    index.apply(rows, 1)
    oracle = oracle_of(index, rows)
    rng = random.Random(3)
    texts = [t for _, t in rows.values()]
    queries = [" ".join(rng.sample(rng.choice(texts).split(), 3)) for _ in range(60)]
    queries += ["the of and", "The", "in is to of", "w0x w1x w2x the"]  # common words
    identical = 0
    for query in queries:
        terms = index.terms(query)
        found = index.search(query, 10)
        assert same_ranking(found, oracle, terms, 10), query
        identical += [d for d, _ in found] == [d for d, _ in oracle.top(terms, 10)]
    assert identical >= len(queries) // 2  # the rest differ in the order of equal scores


def test_a_query_of_only_common_words_still_ranks_rows(index: LexicalIndex) -> None:
    rows = corpus(500)
    index.apply(rows, 1)
    found = index.search("the of and", 10)
    assert len(found) == 10
    scores = [s for _, s in found]
    assert scores == sorted(scores, reverse=True) and scores[0] > scores[-1] > 0


CJK = {
    "ja": ["東京", "東京は日本の首都で、世界最大の都市圏です。"],
    "zh": ["北京", "北京是中华人民共和国的首都。"],
    "ko": ["서울", "서울은 대한민국의 수도입니다."],
    "en": ["Paris", "Paris is the capital of France."],
    "mixed": ["Kyoto", "Kyoto (京都) was the capital before Tokyo."],
}


def test_cjk_text_is_found(index: LexicalIndex) -> None:
    index.apply(CJK, 1)
    # Characters are the terms: the rows holding both come first, then "京都" (one of them).
    assert [d for d, _ in index.search("首都", 10)][2:] == ["mixed"]
    assert {d for d, _ in index.search("首都", 10)[:2]} == {"ja", "zh"}
    assert index.search("日本の首都", 10)[0][0] == "ja"
    assert index.search("中华人民共和国", 10)[0][0] == "zh"
    assert index.search("대한민국 수도", 10)[0][0] == "ko"
    assert "mixed" in {d for d, _ in index.search("京都", 10)}
    assert index.search("capital", 10)[0][0] in ("en", "mixed")
    assert index.search("東", 10)[0][0] == "ja"


def test_the_ngram_analyzer_ranks_cjk_words_by_their_character_pairs(tmp_path: Path) -> None:
    index = LexicalIndex(tmp_path / "ngram", analyzer="ngram")
    index.open()
    index.apply(CJK, 1)
    # Unigrams rank "ja" first for 京都 (it holds 京 and 都 twice); bigrams know better.
    assert index.search("京都", 10)[0][0] == "mixed"
    assert index.search("首都", 10)[0][0] in ("ja", "zh")
    assert index.search("capital", 10)[0][0] in ("en", "mixed")
    index.close()


def test_analyzers(tmp_path: Path) -> None:
    assert build_analyzer("en_stem").analyze("Running RUNS Straße café") == \
        ["run", "run", "straße", "café"]
    assert build_analyzer("simple").analyze("Running RUNS") == ["running", "runs"]
    assert build_analyzer("fr_stem").analyze("chevaux nationales") == ["cheval", "national"]
    assert build_analyzer("ngram").analyze("AbC") == ["a", "ab", "b", "bc", "c"]
    assert build_analyzer("en_stem").analyze("x" * 41 + " ok") == ["ok"]  # too long: dropped
    assert check_analyzer("") == "en_stem" and "ngram" in ANALYZERS
    with pytest.raises(InvalidArgument) as err:
        check_analyzer("klingon_stem")
    assert err.value.field_violations[0].field == "text_analyzer"
    simple = LexicalIndex(tmp_path / "simple", analyzer="simple")
    simple.open()
    simple.apply({"a": [None, "running shoes"]}, 1)
    assert simple.search("running", 5)[0][0] == "a" and simple.search("run", 5) == []
    simple.close()
    stemmed = LexicalIndex(tmp_path / "stem")
    stemmed.open()
    stemmed.apply({"a": [None, "running shoes"]}, 1)
    assert stemmed.search("runs", 5)[0][0] == "a"
    stemmed.close()


@pytest.mark.parametrize("selectivity", [0.5, 0.05, 0.001])
def test_filtered_search_is_exact_at_any_selectivity(index: LexicalIndex,
                                                     selectivity: float) -> None:
    rows = corpus(5000, seed=1)
    index.apply(rows, 1)
    oracle = oracle_of(index, rows)
    rng = random.Random(selectivity)
    ids = sorted(rows)
    allowed = set(rng.sample(ids, max(1, int(len(ids) * selectivity))))
    texts = [t for _, t in rows.values()]
    for _ in range(20):
        query = " ".join(rng.sample(rng.choice(texts).split(), 2))
        found = index.search(query, 20, allowed)
        assert {d for d, _ in found} <= allowed
        assert same_ranking(found, oracle, index.terms(query), 20, allowed), query
    # The common words rank the allowed rows too.
    found = index.search("the", 20, allowed)
    assert len(found) == min(20, sum(1 for r in allowed if "the" in rows[r][1].split()))
    assert index.search("the", 5, set()) == []


def test_upserts_and_deletes(index: LexicalIndex) -> None:
    index.apply({"a": ["apple", "red fruit"], "b": ["banana", "yellow fruit"]}, 1)
    index.apply({"a": ["avocado", "green fruit"], "b": None, "c": [None, None]}, 2)
    assert index.search("red", 5) == [] and index.search("banana", 5) == []
    assert [d for d, _ in index.search("fruit", 5)] == ["a"]
    index.apply({"a": ["avocado", "green fruit"]}, 2)  # applied twice: one document
    assert len(index) == 1 and index.watermark == 2


def test_persisted_with_its_watermark_and_reopened(tmp_path: Path) -> None:
    path = tmp_path / "lexical"
    index = LexicalIndex(path)
    index.open()
    index.apply({"a": ["alpha", "first letter"]}, 7)
    index.apply({"b": ["beta", "second letter"]}, None)  # incomplete: watermark stays
    assert index.watermark == 7
    index.close()
    assert index.search("alpha", 5) == [] and not index.is_open
    again = LexicalIndex(path)
    assert again.open() == 7
    assert [d for d, _ in again.search("letter", 5)] == ["a", "b"] or \
        {d for d, _ in again.search("letter", 5)} == {"a", "b"}
    again.release_writer()  # no writer held: harmless
    again.apply({"c": ["gamma", "third letter"]}, 9)
    assert again.writing
    again.release_writer()
    assert not again.writing and len(again.search("letter", 5)) == 3
    again.close()
    # Another analyzer: the saved index no longer matches (a rebuild).
    other = LexicalIndex(path, analyzer="simple")
    assert other.open() is None and len(other) == 0
    other.close()


@pytest.mark.parametrize("damage", ["manifest", "segments", "watermark"])
def test_lost_or_corrupt_files_mean_a_rebuild(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "lexical"
    index = LexicalIndex(path)
    index.open()
    index.apply(corpus(50), 3)
    index.close()
    if damage == "manifest":
        (path / MANIFEST).unlink()
    elif damage == "segments":
        (path / "meta.json").write_text("{broken")
    else:
        (path / MANIFEST).write_text(json.dumps({
            "format": lexical_index.FORMAT, "analyzer": "en_stem", "watermark": -5}))
    again = LexicalIndex(path)
    assert again.open() is None
    assert len(again) == 0 and again.search("doc", 5) == []
    again.apply({"x": ["fresh", "start"]}, 4)
    assert again.search("fresh", 5)[0][0] == "x"
    again.close()


def test_a_closed_index_refuses_writes(tmp_path: Path) -> None:
    index = LexicalIndex(tmp_path / "lexical")
    with pytest.raises(RuntimeError):
        index.apply({"a": ["x", "y"]}, 1)


# -- kept from the change feed (TableIndex) -------------------------------------------------

@pytest.fixture
def store(table_store: TableStore) -> TableStore:
    return table_store


@pytest.fixture
def reader(store: TableStore) -> Iterator[Reader]:
    reads = Reader(store.db)
    yield reads
    reads.close()


def vec(seed: int) -> list[float]:
    v = np.random.default_rng(seed).standard_normal(384)  # the built-in embedder's size
    return (v / np.linalg.norm(v)).tolist()


async def texts_in_db(store: TableStore, schema: TableSchema) -> dict[str, list[str]]:
    out = {}
    async for rows in store.iter_rows(schema, columns=["Title", "Text"]):
        for row in rows:
            out[row.id] = [row.cells[c].value or "" for c in ("Title", "Text")]
    return out


async def check(index: TableIndex, store: TableStore, schema: TableSchema,
                queries: list[str], *, exact: bool = True) -> None:
    """The index answers like a brute-force BM25 over the rows in the database.

    After updates and deletes (``exact=False``), the replaced documents still count in the
    statistics (N, df, average length) until tantivy merges their segments, as in Lucene:
    then the hits are the current rows holding a query word, as many as the oracle finds.
    """
    rows = await texts_in_db(store, schema)
    oracle = oracle_of(index.lexical, {r: t for r, t in rows.items() if any(t)})
    for query in queries:
        found = index.search_text(query, 5)
        terms = index.lexical.terms(query)
        if exact:
            assert same_ranking(found, oracle, terms, 5), query
        else:
            scored = oracle.scores(terms)
            assert {d for d, _ in found} <= set(scored), query
            assert len(found) == min(5, len(scored)), query


async def opened(store: TableStore, schema: TableSchema, directory: Path,
                 reader: Reader) -> TableIndex:
    index = TableIndex(schema, store.db, ChangeFeed(store.db), directory, reader)
    await index.open()
    await index.wait_built()
    return index


async def refreshed(index: TableIndex) -> None:
    index.dirty = True
    await index.refresh(0.0)


async def test_the_feed_keeps_the_bm25_index_exact(store: TableStore, tmp_path: Path,
                                                  reader: Reader) -> None:
    schema = await store.create_table(P, "knowledge", "kb", [])
    rows = await store.insert_rows(schema, [
        {"Title": f"Report {i}", "Text": f"quarterly revenue grew {i} percent in region {i % 3}",
         "Text Embed": vec(i)} for i in range(30)])
    ids = [r.id for r in rows]
    queries = ["revenue region", "report 7", "the percent", "nothing matches this"]
    index = await opened(store, schema, tmp_path / "ix", reader)  # built from a scan
    await check(index, store, schema, queries)
    # Inserts (without a vector too), text updates, a failed embedding, deletes.
    await store.insert_rows(schema, [{"Title": "Memo", "Text": "revenue forecast"},
                                     {"Text": "region north revenue"}])
    await store.update_rows(schema, {ids[0]: {"Text": "completely different words"}})
    await store.write_cells(schema, ids[1], {"Text Embed": Cell(value=None)})
    await store.delete_rows(schema, ids[2:6])
    await refreshed(index)  # what a search does first
    await check(index, store, schema, [*queries, "forecast", "different words", "north"],
                exact=False)
    assert ids[0] not in {d for d, _ in index.search_text("quarterly", 50)}
    assert not {d for d, _ in index.search_text("revenue", 50)} & set(ids[2:6])
    saved = index.lexical.watermark
    assert saved == index.cursor
    await index.close(save=True)
    # Changes while closed are replayed from the saved watermark.
    await store.delete_rows(schema, [ids[6]])
    await store.insert_rows(schema, [{"Title": "Late", "Text": "arrived while closed"}])
    again = await opened(store, schema, tmp_path / "ix", reader)
    assert again.saved is not None  # the graphs were loaded, not rebuilt
    assert again.lexical.watermark is not None and again.lexical.watermark > saved
    await check(again, store, schema, [*queries, "closed"], exact=False)
    await again.close(save=False)


async def test_a_lost_bm25_index_is_rebuilt_alone(store: TableStore, tmp_path: Path,
                                                 reader: Reader) -> None:
    schema = await store.create_table(P, "knowledge", "kb", [])
    await store.insert_rows(schema, [{"Title": f"t{i}", "Text": f"word{i} shared",
                                      "Text Embed": vec(i)} for i in range(20)])
    directory = tmp_path / "ix"
    index = await opened(store, schema, directory, reader)
    await index.close(save=True)
    saved = index.saved
    shutil.rmtree(directory / "lexical")
    await store.insert_rows(schema, [{"Title": "new", "Text": "word99 shared"}])
    again = await opened(store, schema, directory, reader)
    assert again.saved == saved  # vectors loaded from their files, not rebuilt
    await check(again, store, schema, ["shared", "word7", "word99"])  # rebuilt: exact
    await again.close(save=False)


async def test_idle_writers_are_released(store: TableStore, tmp_path: Path) -> None:
    indexes = KnowledgeIndexes(store.db, tmp_path / "indexes")
    indexes.poll_interval_s = 0.05
    indexes.writer_idle_s = 0.2
    store.rows.change_listeners.append(indexes.notify)
    await indexes.start()
    try:
        schema = await store.create_table(P, "knowledge", "kb", [])
        index = await indexes.get(schema)
        await store.insert_rows(schema, [{"Title": "a", "Text": "written"}])
        index = await indexes.get(schema)
        assert index.lexical.writing and index.search_text("written", 5)
        for _ in range(200):
            if not index.lexical.writing:
                break
            await asyncio.sleep(0.05)
        assert not index.lexical.writing
        await store.insert_rows(schema, [{"Title": "b", "Text": "written again"}])
        index = await indexes.get(schema)
        assert len(index.search_text("written", 5)) == 2
    finally:
        await indexes.stop()


# -- through hybrid search ------------------------------------------------------------------

@pytest.fixture
async def searcher(store: TableStore, tmp_path: Path) -> AsyncIterator[HybridSearcher]:
    indexes = KnowledgeIndexes(store.db, tmp_path / "indexes")
    indexes.poll_interval_s = 3600
    await indexes.start()
    store.rows.change_listeners.append(indexes.notify)
    reader = Reader(store.db)
    try:
        yield HybridSearcher(db=store.db, tables=store, models=ModelRegistry.from_config([]),
                             indexes=indexes,
                             reader=reader)
    finally:
        await indexes.stop()
        reader.close()


async def test_hybrid_search_keeps_common_words_and_finds_cjk(
        searcher: HybridSearcher, store: TableStore) -> None:
    schema = await store.create_table(P, "knowledge", "kb", [])
    rows = await store.insert_rows(schema, [
        {"Title": "Tokyo", "Text": "東京は日本の首都です。"},
        {"Title": "Filler", "Text": "it is what it is and that is all of it"},
        {"Title": "Other", "Text": "a note about the weather"},
    ])
    common = await searcher.search(schema, "what is it", k=3)  # only common words
    lexical = sorted((h for h in common.hits if h.lexical_rank), key=lambda h: h.lexical_rank)
    assert lexical and lexical[0].row.id == rows[1].id
    cjk = await searcher.search(schema, "日本の首都", k=3)
    assert any(h.row.id == rows[0].id and h.lexical_rank == 1 for h in cjk.hits)


def test_every_listed_analyzer_builds_and_stems_in_its_language() -> None:
    from rowforge.server.tables.model import STEM_LANGUAGES

    assert set(lexical_index.STEMMERS) == set(STEM_LANGUAGES)
    for name in ANALYZERS:  # lowercased (and stemmed: Hungarian cuts "word" to "wor")
        assert build_analyzer(name).analyze("WORD") in (
            ["word"], ["wor"], ["w", "wo", "o", "or", "r", "rd", "d"]), name


async def test_a_database_of_an_older_version_gets_the_analyzer_column(
        store: TableStore) -> None:
    import sqlalchemy as sa

    await store.create_table(P, "knowledge", "kb", [])
    async with store.db.write() as conn:  # as a version before migrations created it
        await conn.execute(sa.text("ALTER TABLE rf_user_tables DROP COLUMN text_analyzer"))
        await conn.execute(sa.text("DROP TABLE rf_alembic_version"))
        await conn.execute(sa.text("DROP TABLE rf_provider_usage"))  # came with 0002
        await conn.execute(sa.text("DROP TABLE rf_replicas"))  # came with 0003
        await conn.execute(sa.text(
            "ALTER TABLE rf_batch_jobs DROP COLUMN queue_cursor"))  # came with 0004
    await store.db.prepare_schema(upgrade=True)  # rowforge admin migrate
    await store.db.prepare_schema()  # idempotent
    fresh = TableStore(store.db, models=ModelRegistry.from_config([]))
    try:
        assert (await fresh.get_table(P, "knowledge", "kb")).text_analyzer == "en_stem"
        made = await fresh.create_table(P, "knowledge", "kb2", [], text_analyzer="fr_stem")
        assert made.text_analyzer == "fr_stem"
        assert (await fresh.get_table(P, "knowledge", "kb2")).text_analyzer == "fr_stem"
        action = await fresh.create_table(P, "action", "a", [])
        assert action.text_analyzer == ""
    finally:
        await fresh.close()
