"""Chunking: a parsed document becomes the chunks that become knowledge-table rows.

Text sections are cut into chunks of at most ``chunk_size`` characters. A cut prefers, in order,
a paragraph break (blank line), a sentence end, a line break and a word break, as long as the
chunk keeps a fair share of the window (a quarter of ``chunk_size`` for paragraphs, half for the
others); a run of characters with no break at all is cut hard at ``chunk_size``. Each chunk after
the first starts at a word start at most ``chunk_overlap`` characters before the previous chunk's
end (so consecutive chunks share at most ``chunk_overlap`` characters, and less when no word
starts in that window; a hard cut overlaps exactly). Chunks are trimmed, never blank, never span
two sections, and so never cross a page.

Records (a csv row, a json element, a spreadsheet row) are kept whole: one record per chunk,
even when longer than ``chunk_size``. They are not packed together, so every knowledge-table row
(and every citation) is exactly one record.

Pure and deterministic: the same document and parameters give the same chunks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple

from rowforge.server.errors import Violations
from rowforge.server.knowledge.parsing import ParsedDocument

DEFAULT_CHUNK_SIZE = 1000
DEFAULT_CHUNK_OVERLAP = 200
MIN_CHUNK_SIZE = 100
"""Smaller chunks carry too little context to embed meaningfully."""
MAX_CHUNK_SIZE = 100_000
"""Larger chunks exceed every embedding model's context window."""


@dataclass(frozen=True)
class Chunk:
    """One future knowledge-table row."""

    title: str
    text: str
    page: int | None
    index: int
    """Position in the document, from 0."""


class Span(NamedTuple):
    """A chunk of a text: ``text[start:end]``."""

    start: int
    end: int


def validate_chunking(chunk_size: int, chunk_overlap: int) -> None:
    """Checks the chunking parameters.

    Raises:
        InvalidArgument: with a field violation on ``chunk_size`` or ``chunk_overlap``.
    """
    violations = Violations()
    violations.check(MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE, "chunk_size",
                     f"must be between {MIN_CHUNK_SIZE} and {MAX_CHUNK_SIZE} characters "
                     f"(got {chunk_size})")
    violations.check(chunk_overlap >= 0, "chunk_overlap",
                     f"must not be negative (got {chunk_overlap})")
    violations.check(chunk_overlap < chunk_size, "chunk_overlap",
                     f"must be smaller than chunk_size {chunk_size} (got {chunk_overlap})")
    violations.raise_if_any()


def chunk_document(doc: ParsedDocument, *, chunk_size: int = DEFAULT_CHUNK_SIZE,
                   chunk_overlap: int = DEFAULT_CHUNK_OVERLAP) -> list[Chunk]:
    """Cuts a parsed document into chunks (see the module docstring for the rules).

    Args:
        doc: The parsed document.
        chunk_size: Most characters in a text chunk (records may be longer).
        chunk_overlap: Most characters two consecutive text chunks share.

    Returns:
        The chunks in document order, indexed from 0, each with the document's title and its
        section's page.

    Raises:
        InvalidArgument: bad ``chunk_size`` or ``chunk_overlap`` (field violations).
    """
    validate_chunking(chunk_size, chunk_overlap)
    chunks: list[Chunk] = []
    for section in doc.sections:
        if section.is_record:
            pieces = [section.text.strip()]
        else:
            spans = _split(section.text, chunk_size, chunk_overlap)
            pieces = [section.text[start:end] for start, end in spans]
        for piece in pieces:
            if piece:
                chunks.append(Chunk(doc.title, piece, section.page, len(chunks)))
    return chunks


def split_text(text: str, *, chunk_size: int = DEFAULT_CHUNK_SIZE,
               chunk_overlap: int = DEFAULT_CHUNK_OVERLAP) -> list[Span]:
    """The spans of ``text`` that :func:`chunk_document` makes into chunks.

    Every span is at most ``chunk_size`` long, starts and ends on non-whitespace, and starts and
    ends strictly after the previous one; the gap or overlap between consecutive spans is
    whitespace or at most ``chunk_overlap`` characters.

    Raises:
        InvalidArgument: bad ``chunk_size`` or ``chunk_overlap`` (field violations).
    """
    validate_chunking(chunk_size, chunk_overlap)
    return _split(text, chunk_size, chunk_overlap)


# A sentence ends with terminal punctuation followed by whitespace.
_SENTENCE_END = re.compile(r"[.!?…。！？](?=\s)")


def _split(text: str, size: int, overlap: int) -> list[Span]:
    last = len(text.rstrip())
    pos = _skip_space(text, 0, last)
    spans: list[Span] = []
    prev_end = pos
    while pos < last:
        if last - pos <= size:
            spans.append(Span(pos, last))
            break
        end, hard = _cut(text, pos, size, prev_end)
        spans.append(Span(pos, end))
        prev_end = end
        pos = _next_start(text, pos, end, overlap, size, hard, last)
    return spans


def _cut(text: str, pos: int, size: int, prev_end: int) -> tuple[int, bool]:
    """Where the chunk starting at ``pos`` ends, and whether that is a hard (mid-word) cut.

    The end is trimmed of whitespace, at most ``pos + size``, and past ``prev_end`` so that
    every chunk adds text.
    """
    limit = pos + size

    def floor(fraction: int) -> int:
        return max(pos + size // fraction, prev_end + 1)

    # Paragraph break.
    lo = floor(4)
    i = text.rfind("\n\n", lo, limit + 2)
    if i != -1 and (end := _trim_end(text, pos, i)) >= lo:
        return end, False
    # Sentence end.
    lo = floor(2)
    best = -1
    for match in _SENTENCE_END.finditer(text, max(lo - 1, pos), limit + 1):
        if lo <= match.end() <= limit:
            best = match.end()
    if best != -1:
        return best, False
    # Line break.
    i = text.rfind("\n", lo, limit + 1)
    if i != -1 and (end := _trim_end(text, pos, i)) >= lo:
        return end, False
    # Word break.
    for i in range(limit, lo - 1, -1):
        if text[i].isspace():
            end = _trim_end(text, pos, i)
            if end >= lo:
                return end, False
            break
    # No break fits: cut at full size. `_next_start` put the next unseen character inside the
    # window, so the trimmed end still adds text.
    end = _trim_end(text, pos, limit)
    return end, end == limit and not text[limit].isspace()


def _next_start(text: str, pos: int, end: int, overlap: int, size: int, hard: bool,
                last: int) -> int:
    """Where the chunk after ``text[pos:end]`` starts: a word start within the overlap."""
    following = _skip_space(text, end, last)
    if overlap:
        # Never so far back that the next window cannot hold the word after `end` (or, for a
        # word too long to keep whole, its first character): the next chunk must add text, and
        # should not have to cut that word.
        reach = following
        while reach < last and reach - following <= size // 2 and not text[reach].isspace():
            reach += 1
        if reach - following > size // 2:
            reach = following + 1
        lo = max(end - overlap, pos + 1, reach - size)
        for i in range(lo, end):
            if not text[i].isspace() and text[i - 1].isspace():
                return i
        if hard:
            i = _skip_space(text, lo, end)
            if i < end:
                return i
    return following


def _trim_end(text: str, pos: int, end: int) -> int:
    while end > pos and text[end - 1].isspace():
        end -= 1
    return end


def _skip_space(text: str, i: int, stop: int) -> int:
    while i < stop and text[i].isspace():
        i += 1
    return i
