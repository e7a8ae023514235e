"""Chunking: size, overlap, coverage and boundary properties, pages and records."""

from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rowforge.server.errors import InvalidArgument
from rowforge.server.knowledge.chunking import (
    MAX_CHUNK_SIZE,
    MIN_CHUNK_SIZE,
    Chunk,
    Span,
    chunk_document,
    split_text,
)
from rowforge.server.knowledge.parsing import ParsedDocument, Section

# Text made of words, sentences, lines and paragraphs, plus the odd very long "word" (a URL,
# a hash) that forces hard cuts, and non-ASCII letters.
_word = st.one_of(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyzéß漢", min_size=1, max_size=12),
    st.text(alphabet="xyz0123456789/:-", min_size=50, max_size=400),
)
_separator = st.sampled_from([" ", " ", " ", " ", ". ", "! ", "\n", "\n\n", "  ", "\t", ".\n\n"])
texts = st.lists(st.tuples(_word, _separator), max_size=300).map(
    lambda pairs: "".join(w + s for w, s in pairs))


@st.composite
def sizes(draw: st.DrawFn) -> tuple[int, int]:
    size = draw(st.integers(MIN_CHUNK_SIZE, 400))
    overlap = draw(st.integers(0, size - 1))
    return size, overlap


def _check_spans(text: str, spans: list[Span], size: int, overlap: int) -> None:
    if not text.strip():
        assert spans == []
        return
    # Coverage: from the first to the last non-whitespace character.
    assert spans[0].start == len(text) - len(text.lstrip())
    assert spans[-1].end == len(text.rstrip())
    for start, end in spans:
        piece = text[start:end]
        assert 0 < end - start <= size
        assert piece == piece.strip()
    for (s1, e1), (s2, e2) in pairwise(spans):
        assert s1 < s2 and e1 < e2  # every chunk adds text
        if s2 >= e1:
            assert not text[e1:s2].strip()  # a gap holds only whitespace
        else:
            assert e1 - s2 <= overlap  # overlap respected
    # Concatenating the chunks minus their overlaps gives the text, whitespace gaps aside.
    rebuilt, covered = [], spans[0].start
    for start, end in spans:
        rebuilt.append(text[covered:start] if start > covered else "")
        rebuilt.append(text[max(start, covered):end])
        covered = max(covered, end)
    assert "".join(rebuilt) == text.strip()


@settings(max_examples=300, deadline=None)
@given(text=texts, params=sizes())
def test_split_text_properties(text: str, params: tuple[int, int]) -> None:
    size, overlap = params
    spans = split_text(text, chunk_size=size, chunk_overlap=overlap)
    _check_spans(text, spans, size, overlap)
    assert split_text(text, chunk_size=size, chunk_overlap=overlap) == spans  # deterministic


@settings(max_examples=200, deadline=None)
@given(text=texts, params=sizes())
def test_cuts_fall_on_boundaries_unless_no_break_fits(text: str, params: tuple[int, int]) -> None:
    size, overlap = params
    spans = split_text(text, chunk_size=size, chunk_overlap=overlap)
    ends = [-1] + [end for _, end in spans]
    for (start, end), previous_end in zip(spans[:-1], ends, strict=False):
        if text[end].isspace():
            continue
        # A mid-word cut only happens at full size, when no whitespace in the window could end
        # a chunk that is at least half full and adds text beyond the previous chunk.
        assert end - start == size
        floor = max(start + size // 2, previous_end + 1)
        breaks = [w for w in range(floor, start + size + 1)
                  if text[w].isspace() and len(text[:w].rstrip()) >= floor]
        assert breaks == []


@settings(max_examples=200, deadline=None)
@given(
    sections=st.lists(
        st.tuples(texts, st.one_of(st.none(), st.integers(1, 50)), st.booleans()), max_size=8),
    params=sizes(),
)
def test_chunk_document_properties(sections: list[tuple[str, int | None, bool]],
                                   params: tuple[int, int]) -> None:
    size, overlap = params
    doc = ParsedDocument("T", [Section(t, page, rec) for t, page, rec in sections])
    chunks = chunk_document(doc, chunk_size=size, chunk_overlap=overlap)
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert all(c.title == "T" and c.text == c.text.strip() and c.text for c in chunks)
    # Chunks come section by section, in order, and never mix sections (so never pages).
    position = 0
    for text, page, is_record in sections:
        if is_record:
            expected = [text.strip()] if text.strip() else []
        else:
            expected = [text[s:e] for s, e in
                        split_text(text, chunk_size=size, chunk_overlap=overlap)]
        mine = chunks[position:position + len(expected)]
        assert [c.text for c in mine] == expected
        assert all(c.page == page for c in mine)
        position += len(expected)
    assert position == len(chunks)
    assert chunk_document(doc, chunk_size=size, chunk_overlap=overlap) == chunks


def test_prefers_paragraph_then_sentence_then_word_breaks() -> None:
    first = "Alpha beta gamma. " * 20  # 360 characters
    text = first.strip() + "\n\n" + "Delta epsilon. " * 30
    spans = split_text(text, chunk_size=500, chunk_overlap=0)
    assert text[: spans[0].end] == first.strip()  # the paragraph, not a fuller chunk
    sentences = "One two three four. " * 40
    spans = split_text(sentences, chunk_size=100, chunk_overlap=0)
    assert all(sentences[s:e].endswith(".") for s, e in spans)
    words = "word " * 100
    spans = split_text(words, chunk_size=100, chunk_overlap=0)
    assert all(words[s:e].endswith("word") for s, e in spans)
    assert max(e - s for s, e in spans) == 99


def test_overlap_starts_at_a_word_within_the_window() -> None:
    text = " ".join(f"w{i:03d}" for i in range(300))  # 4-letter words
    spans = split_text(text, chunk_size=200, chunk_overlap=50)
    for (_, e1), (s2, _) in pairwise(spans):
        assert 45 <= e1 - s2 <= 50
        assert text[s2 - 1] == " "


def test_hard_cut_overlaps_exactly() -> None:
    text = "x" * 1000
    spans = split_text(text, chunk_size=300, chunk_overlap=100)
    assert spans[:2] == [Span(0, 300), Span(200, 500)]
    assert spans[-1].end == 1000


def test_short_text_is_one_chunk_and_blank_text_none() -> None:
    assert split_text("  hello  ", chunk_size=100, chunk_overlap=10) == [Span(2, 7)]
    assert split_text(" \n\t ", chunk_size=100, chunk_overlap=10) == []


def test_defaults_are_the_seeds() -> None:
    text = "Sentence number one is here. " * 200
    spans = split_text(text)
    assert max(e - s for s, e in spans) <= 1000
    assert max(e1 - s2 for (_, e1), (s2, _) in pairwise(spans)) <= 200


def test_records_are_kept_whole_one_per_chunk() -> None:
    long_record = "name: " + "x " * 800
    doc = ParsedDocument("People", [
        Section("a: 1", is_record=True),
        Section("a: 2", is_record=True),
        Section(long_record, is_record=True),
        Section("   ", is_record=True),
    ])
    chunks = chunk_document(doc, chunk_size=100, chunk_overlap=10)
    assert chunks == [Chunk("People", "a: 1", None, 0), Chunk("People", "a: 2", None, 1),
                      Chunk("People", long_record.strip(), None, 2)]


def test_pages_are_kept_and_never_crossed() -> None:
    doc = ParsedDocument("Book", [Section("page one " * 30, page=1),
                                  Section("page two", page=2)])
    chunks = chunk_document(doc, chunk_size=120, chunk_overlap=20)
    assert {c.page for c in chunks[:-1]} == {1}
    assert chunks[-1] == Chunk("Book", "page two", 2, len(chunks) - 1)


@pytest.mark.parametrize(
    ("size", "overlap", "fields"),
    [
        (MIN_CHUNK_SIZE - 1, 0, {"chunk_size"}),
        (MAX_CHUNK_SIZE + 1, 0, {"chunk_size"}),
        (0, 0, {"chunk_size", "chunk_overlap"}),
        (1000, -1, {"chunk_overlap"}),
        (1000, 1000, {"chunk_overlap"}),
        (50, 60, {"chunk_size", "chunk_overlap"}),
    ],
)
def test_bad_parameters_are_field_violations(size: int, overlap: int, fields: set[str]) -> None:
    doc = ParsedDocument("T", [Section("text")])
    with pytest.raises(InvalidArgument) as caught:
        chunk_document(doc, chunk_size=size, chunk_overlap=overlap)
    assert {v.field for v in caught.value.field_violations} == fields
    with pytest.raises(InvalidArgument):
        split_text("text", chunk_size=size, chunk_overlap=overlap)


def test_bounds_are_accepted() -> None:
    doc = ParsedDocument("T", [Section("text")])
    assert len(chunk_document(doc, chunk_size=MIN_CHUNK_SIZE, chunk_overlap=MIN_CHUNK_SIZE - 1)) == 1
    assert len(chunk_document(doc, chunk_size=MAX_CHUNK_SIZE, chunk_overlap=0)) == 1


def test_large_text_is_fast() -> None:
    import time

    text = ("A sentence of moderate length goes here. " * 12 + "\n\n") * 2000  # ~1 MB
    started = time.perf_counter()
    spans = split_text(text)
    assert time.perf_counter() - started < 2.0
    assert len(spans) > 1000
