"""The BM25 word planner (stopwords, common-word budget, estimates from a sample) and the RAG
prompt pieces (query formulation, reference blocks, citations the built-in model follows)."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator

import pytest

from rowforge.server.auth import ensure_default_project
from rowforge.server.knowledge import lexical
from rowforge.server.knowledge.lexical import LexicalPlanner, TermStats, count_documents
from rowforge.server.knowledge.rag import (
    MAX_QUERY_CHARS,
    augment_prompt,
    formulate_query,
    reference_text,
)
from rowforge.server.providers import Message, chat
from rowforge.server.providers.prompts import CITATION_INSTRUCTION, parse_citations
from rowforge.server.providers.registry import ModelRegistry
from rowforge.server.storage.db import Database
from rowforge.server.tables.model import Chunk, RAGParams, References
from rowforge.server.tables.store import TableStore

# -- lexical planner ------------------------------------------------------------------------


def test_count_documents_counts_each_word_once_per_row() -> None:
    counts = count_documents([("Apple apple pie", None), ("pie", "PIE crust"), (None,)])
    assert counts == Counter({"apple": 1, "pie": 2, "crust": 1})


def test_term_stats_scale_the_sample_and_know_when_they_are_stale() -> None:
    stats = TermStats(rows=10_000, sampled=100, counts=Counter({"common": 50, "rare": 1}))
    assert stats.df("common") == 5000 and stats.df("rare") == 100 and stats.df("none") == 0
    assert not stats.stale(11_000) and stats.stale(13_000) and stats.stale(7_000)


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[TableStore]:
    db = Database(database_url)
    await db.create_schema()
    await ensure_default_project(db)
    tables = TableStore(db, models=ModelRegistry.from_config([]))
    try:
        yield tables
    finally:
        await tables.close()
        await db.close()


async def test_planner_drops_stopwords_and_words_too_common_to_rank(
        store: TableStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lexical, "POSTINGS_BUDGET", 50)
    schema = await store.create_table("default", "knowledge", "kb", [])
    rows = [{"Title": f"doc {i}", "Text": f"everywhere common{i % 2} unique{i}"}
            for i in range(200)]
    await store.insert_rows(schema, rows)
    planner = LexicalPlanner(store.db)
    # Small tables keep every word but the stopwords.
    assert await planner.plan(schema, "The everywhere of unique7", 40) == ["everywhere",
                                                                          "unique7"]
    words = await planner.plan(schema, "what is everywhere and common1 or unique7", 200)
    assert words == ["unique7"]  # the others are in half the rows or more
    assert await planner.plan(schema, "everywhere", 200) == []
    assert await planner.plan(schema, "the and of", 200) == []
    stats = planner._stats[schema.storage_id]
    assert stats.df("everywhere") == pytest.approx(200, rel=0.2)


# -- RAG prompt pieces ----------------------------------------------------------------------


def test_formulated_queries_drop_markup_and_keep_both_ends_of_long_prompts() -> None:
    assert formulate_query("<q>  What is\n the capital?</q>") == "What is the capital?"
    long = "start " + "filler " * 400 + " the real question?"
    query = formulate_query(long)
    assert len(query) <= MAX_QUERY_CHARS + 1
    assert query.startswith("start") and query.endswith("the real question?")
    assert formulate_query("a < b and c > d") == "a < b and c > d"  # not tags


def test_reference_text_has_a_title_line_with_the_page() -> None:
    assert reference_text(Chunk("r", "Report", "Body.", page=3)) == "Title: Report, page 3\nBody."
    assert reference_text(Chunk("r", "Report", "Body.")) == "Title: Report\nBody."
    assert reference_text(Chunk("r", "", "Body.", page=2)) == "Title: (untitled), page 2\nBody."
    assert reference_text(Chunk("r", "", "Body.")) == "Body."


def refs(*texts: str) -> References:
    return References("kb", "q", tuple(Chunk(f"r{i}", f"T{i}", t, page=i + 1)
                                       for i, t in enumerate(texts)))


def test_augmented_prompt_lists_references_and_asks_for_citations_only_when_told() -> None:
    params = RAGParams(table_id="kb")
    plain = augment_prompt("Question?", refs("Alpha is first.", "Beta is second."), params)
    assert "[@0] Title: T0, page 1\nAlpha is first." in plain
    assert "[@1] Title: T1, page 2\nBeta is second." in plain
    assert plain.endswith("Question?") and CITATION_INSTRUCTION not in plain
    cited = augment_prompt("Question?", refs("Alpha is first."),
                           RAGParams(table_id="kb", inline_citations=True))
    assert CITATION_INSTRUCTION in cited
    assert augment_prompt("Question?", refs(), params) == "Question?"


async def test_the_built_in_model_cites_what_the_prompt_lists() -> None:
    spec = ModelRegistry.from_config([]).get("rowforge/chat")
    prompt = augment_prompt("Which is first?", refs("Alpha is first.", "Beta is second."),
                            RAGParams(table_id="kb", inline_citations=True))
    answer = (await chat(spec, [Message("user", prompt)])).text
    assert parse_citations(answer) == [0, 1]
    assert "Alpha is first [@0]" in answer and "Title" not in answer
    uncited = augment_prompt("Which is first?", refs("Alpha is first."),
                             RAGParams(table_id="kb"))
    assert parse_citations((await chat(spec, [Message("user", uncited)])).text) == []
