"""The RAG prompt pieces (query formulation, reference blocks, citations the built-in model
follows). (The BM25 side is tested in test_knowledge_lexical_index.py.)"""

from __future__ import annotations

from rowforge.server.knowledge.rag import (
    MAX_QUERY_CHARS,
    augment_prompt,
    formulate_query,
    reference_text,
)
from rowforge.server.providers import Message, chat
from rowforge.server.providers.prompts import CITATION_INSTRUCTION, parse_citations
from rowforge.server.providers.registry import ModelRegistry
from rowforge.server.tables.model import Chunk, RAGParams, References

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
