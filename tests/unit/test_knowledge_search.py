"""HybridSearcher on real SQLite and PostgreSQL with the built-in models: fusion, filters,
column selection, reranking and its failure, every refusal."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rowforge.server.auth import ensure_default_project
from rowforge.server.errors import FailedPrecondition, InvalidArgument, NotFound
from rowforge.server.knowledge.indexes import KnowledgeIndexes
from rowforge.server.knowledge.reader import Reader
from rowforge.server.knowledge.search import HybridSearcher, SearchOutcome, candidates
from rowforge.server.providers import embed
from rowforge.server.providers.registry import ModelRegistry
from rowforge.server.storage.db import Database
from rowforge.server.tables.model import TableSchema
from rowforge.server.tables.store import TableStore
from tests.conftest import FAKE_KEY_ENV

P = "default"
DOCS = [
    ("Paris", "Paris is the capital of France, on the river Seine.", "eu", 1),
    ("Berlin", "Berlin is the capital of Germany; the Brandenburg Gate stands there.", "eu", 2),
    ("Tokyo", "Tokyo is the capital of Japan and its largest city.", "asia", 3),
    ("Pasta", "Boil salted water and cook the spaghetti for nine minutes.", "food", 4),
    ("Bread", "Knead the dough, let it rise for an hour, then bake it.", "food", 5),
    ("Rivers", "The Seine flows through Paris; the Spree flows through Berlin.", "eu", 6),
    ("Sushi", "Sushi combines vinegared rice with raw fish, a Japanese dish.", "food", 7),
    ("Volcanoes", "Mount Fuji is a volcano near Tokyo, the highest peak of Japan.", "asia", 8),
]


@pytest.fixture
async def searcher(database_url: str, tmp_path: Path,
                   fake_openai: Any, monkeypatch: pytest.MonkeyPatch,
                   ) -> AsyncIterator[tuple[HybridSearcher, TableStore]]:
    monkeypatch.setenv(FAKE_KEY_ENV, "sk-fake")
    db = Database(database_url)
    await db.prepare_schema()
    await ensure_default_project(db)
    models = ModelRegistry.from_config([
        {"id": "fake/rerank", "route": "cohere/rerank-english-v3.0",
         "api_base": fake_openai.base_url.removesuffix("/v1"), "api_key_env": FAKE_KEY_ENV,
         "capabilities": ["rerank"]}])
    tables = TableStore(db, models=models)
    indexes = KnowledgeIndexes(db, tmp_path / "indexes")
    indexes.poll_interval_s = 3600
    await indexes.start()
    tables.rows.change_listeners.append(indexes.notify)
    reader = Reader(db)
    searcher = HybridSearcher(db=db, tables=tables, models=models, indexes=indexes,
                              reader=reader)
    try:
        yield searcher, tables
    finally:
        await indexes.stop()
        reader.close()
        await tables.close()
        await db.close()


async def corpus(searcher: HybridSearcher, tables: TableStore) -> TableSchema:
    from rowforge.server.tables.model import ColumnSchema

    schema = await tables.create_table(P, "knowledge", "kb", [
        ColumnSchema("region"), ColumnSchema("n", "int")])
    spec = searcher.models.get("rowforge/embed")
    titles = (await embed(spec, [d[0] for d in DOCS])).vectors
    texts = (await embed(spec, [d[1] for d in DOCS])).vectors
    await tables.insert_rows(schema, [
        {"Title": d[0], "Text": d[1], "region": d[2], "n": d[3],
         "Title Embed": titles[i].tolist(), "Text Embed": texts[i].tolist()}
        for i, d in enumerate(DOCS)])
    return schema


def titles(outcome: SearchOutcome) -> list[str]:
    return [h.row.cells["Title"].value for h in outcome.hits]


async def test_fusion_scores_are_rrf_of_the_two_ranks(searcher: Any) -> None:
    search, tables = searcher
    schema = await corpus(search, tables)
    outcome = await search.search(schema, "capital of Japan", k=5)
    assert titles(outcome)[0] == "Tokyo"
    assert not outcome.reranked and outcome.rerank_error == ""
    assert len(outcome.hits) == 5
    for hit in outcome.hits:
        expected = sum(1 / (60 + r) for r in (hit.vector_rank, hit.lexical_rank) if r)
        assert hit.score == pytest.approx(expected)
    scores = [h.score for h in outcome.hits]
    assert scores == sorted(scores, reverse=True)
    # Words in no row: the vector side alone.
    only_vectors = await search.search(schema, "zzyzx qwxv", k=3)
    assert all(h.lexical_rank == 0 and h.vector_rank for h in only_vectors.hits)


async def test_where_filter_matches_a_brute_force_oracle(searcher: Any) -> None:
    search, tables = searcher
    schema = await corpus(search, tables)
    spec = search.models.get("rowforge/embed")
    query = "a dish with rice or noodles"
    q = (await embed(spec, [query])).vectors[0]
    outcome = await search.search(schema, query, k=3, where='"region" = \'food\' AND n > 3')
    allowed = [d for d in DOCS if d[2] == "food" and d[3] > 3]
    assert {t for t in titles(outcome)} <= {d[0] for d in allowed}
    vectors = {d[0]: (await embed(spec, [d[0], d[1]])).vectors for d in allowed}
    best = sorted(vectors, key=lambda t: min(float(1 - v @ q) for v in vectors[t]))
    by_vector = sorted((h for h in outcome.hits if h.vector_rank), key=lambda h: h.vector_rank)
    assert [h.row.cells["Title"].value for h in by_vector] == best[:len(by_vector)]
    assert len(by_vector) == min(len(allowed), candidates(3))
    none = await search.search(schema, query, k=3, where='"region" = \'nowhere\'')
    assert none.hits == []


async def test_columns_select_what_comes_back(searcher: Any) -> None:
    search, tables = searcher
    schema = await corpus(search, tables)
    outcome = await search.search(schema, "Paris", k=2, columns=["Title", "n"])
    assert outcome.hits and all(set(h.row.cells) == {"Title", "n"} for h in outcome.hits)
    default = await search.search(schema, "Paris", k=1)
    assert set(default.hits[0].row.cells) == {"Title", "Text", "File ID", "Page", "region", "n"}
    embeds = await search.search(schema, "Paris", k=1, columns=["Text Embed"])
    assert len(embeds.hits[0].row.cells["Text Embed"].value) == 384


async def test_reranking_orders_and_a_failing_reranker_keeps_the_fusion(searcher: Any,
                                                                       fake_openai: Any) -> None:
    search, tables = searcher
    schema = await corpus(search, tables)
    ranked = await search.search(schema, "how long to cook spaghetti", k=3,
                                 reranking_model="rowforge/rerank")
    assert ranked.reranked and titles(ranked)[0] == "Pasta"
    scores = [h.score for h in ranked.hits]
    assert scores == sorted(scores, reverse=True)
    remote = await search.search(schema, "capital of Germany", k=2,
                                 reranking_model="fake/rerank")
    assert remote.reranked and titles(remote)[0] == "Berlin"
    fused = await search.search(schema, "capital of Germany", k=2)
    fake_openai.fail_next(1, status=500)
    failed = await search.search(schema, "capital of Germany", k=2,
                                 reranking_model="fake/rerank")
    assert not failed.reranked and "fake/rerank" in failed.rerank_error
    assert titles(failed) == titles(fused)
    assert [h.score for h in failed.hits] == pytest.approx([h.score for h in fused.hits])


@pytest.mark.parametrize(("kwargs", "error", "field"), [
    ({"k": -1}, InvalidArgument, "k"),
    ({"k": 1001}, InvalidArgument, "k"),
    ({"query": "   "}, InvalidArgument, "query"),
    ({"query": "x" * 10_001}, InvalidArgument, "query"),
    ({"columns": ["nope"]}, InvalidArgument, "columns[0]"),
    ({"where": "nope = 1"}, InvalidArgument, "where"),
    ({"where": "n = 'text'"}, InvalidArgument, "where"),
    ({"reranking_model": "no/such"}, NotFound, "reranking_model"),
    ({"reranking_model": "rowforge/embed"}, InvalidArgument, "reranking_model"),
])
async def test_refusals(searcher: Any, kwargs: dict[str, Any], error: type,
                        field: str) -> None:
    search, tables = searcher
    schema = await corpus(search, tables)
    args = {"query": "Paris", **kwargs}
    query = args.pop("query")
    with pytest.raises(error) as caught:
        await search.search(schema, query, **args)
    assert field in {v.field for v in caught.value.field_violations}


async def test_k_zero_means_ten_and_big_k_is_capped_by_the_rows(searcher: Any) -> None:
    search, tables = searcher
    schema = await corpus(search, tables)
    assert len((await search.search(schema, "the", k=0)).hits) == len(DOCS)
    assert len((await search.search(schema, "capital", k=1000)).hits) == len(DOCS)


async def test_an_embedding_model_no_longer_configured_is_a_failed_precondition(
        searcher: Any) -> None:
    search, tables = searcher
    schema = await corpus(search, tables)
    import dataclasses

    gone = dataclasses.replace(schema, embedding_model="old/model")
    with pytest.raises(FailedPrecondition) as caught:
        await search.search(gone, "Paris")
    assert caught.value.reason == "EMBEDDING_MODEL_UNAVAILABLE"


async def test_empty_table_and_fresh_rows(searcher: Any) -> None:
    search, tables = searcher
    schema = await tables.create_table(P, "knowledge", "empty", [])
    assert (await search.search(schema, "anything")).hits == []
    spec = search.models.get("rowforge/embed")
    v = (await embed(spec, ["fresh bread"])).vectors[0]
    row, = await tables.insert_rows(schema, [{"Title": "Fresh", "Text": "fresh bread",
                                              "Text Embed": np.asarray(v).tolist()}])
    outcome = await search.search(schema, "fresh bread")  # searchable at once
    assert [h.row.id for h in outcome.hits] == [row.id]
    assert outcome.hits[0].vector_rank == 1 and outcome.hits[0].lexical_rank == 1


async def test_a_row_deleted_behind_the_index_is_replaced_by_the_next_fused_row(
        searcher: Any) -> None:
    """Only the rows returned are read; one deleted since the index saw it (the change not
    yet applied) is left out and the next row of the fusion takes its place."""
    search, tables = searcher
    schema = await corpus(search, tables)
    before = await search.search(schema, "capital city", k=3)
    assert len(before.hits) == 3
    gone = before.hits[0].row.id
    tables.rows.change_listeners.remove(search.indexes.notify)  # the index keeps the row
    await tables.delete_rows(schema, [gone])
    after = await search.search(schema, "capital city", k=3)
    assert [h.row.id for h in after.hits][:2] == [h.row.id for h in before.hits][1:]
    assert len(after.hits) == 3 and gone not in {h.row.id for h in after.hits}


def test_read_fused_reads_only_the_rows_it_returns() -> None:
    from rowforge.server.knowledge.search import _read_fused
    from rowforge.server.tables.model import Row

    order = [(f"r{i}", 1.0 / (i + 1)) for i in range(40)]
    existing = {f"r{i}" for i in range(40)} - {"r1", "r4"}
    reads: list[list[str]] = []

    def read(ids: list[str]) -> dict[str, Row]:
        reads.append(ids)
        return {i: Row(i, None, {}) for i in ids if i in existing}

    fused, rows = _read_fused(order, 5, read)
    assert [r for r, _ in fused] == ["r0", "r2", "r3", "r5", "r6"]
    assert set(rows) == {"r0", "r2", "r3", "r5", "r6"}
    assert reads == [["r0", "r1", "r2", "r3", "r4"], ["r5", "r6"]]
    assert _read_fused(order[:3], 5, read)[0] == [("r0", 1.0), ("r2", 1.0 / 3)]
