"""Prompt wording shared by the RAG code and the built-in chat model.

The RAG layer builds its prompt with :func:`format_references` and :data:`CITATION_INSTRUCTION`;
the built-in model (``rowforge/chat``) detects exactly that wording, answers from the first
references and cites them inline, so tests and benchmarks of RAG work offline.

The convention:

* References are listed in the system or user prompt, one per block, each starting with
  ``[@N]`` (N = 0, 1, ...) at the beginning of a line, for example::

      <references>
      [@0] Title: Paris
      Paris is the capital of France.

      [@1] Berlin is the capital of Germany.
      </references>

* Inline citations in the answer use ``[@N]`` for one reference and ``[@N; @M]`` for several,
  placed right after the statement they support (the seeds' ``[@ref0; @ref1]`` shape).
* The model cites only when the prompt contains :data:`CITATION_INSTRUCTION` verbatim
  (:func:`wants_citations`); without it, references are used but not cited.
* Before retrieval, a RAG column may ask its model to write the search query: the system
  message is :data:`QUERY_INSTRUCTION` and the user message the rendered prompt between
  :data:`REQUEST_START` / :data:`REQUEST_END`; the answer is the query, one line
  (:func:`wants_search_query` tells the built-in model it is asked for one).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

REFERENCES_START = "<references>"
REFERENCES_END = "</references>"

CITATION_INSTRUCTION = (
    "Cite the references you use inline with their markers, for example [@0] for one reference "
    "or [@0; @2] for several, right after the statement they support."
)

QUERY_INSTRUCTION = (
    "You write search queries for a knowledge base. Read the request between <request> and "
    "</request> and reply with one search query that would find the passages needed to answer "
    "it: the key terms, or a short question, on one line, without quotes, labels or "
    "explanations."
)
REQUEST_START = "<request>"
REQUEST_END = "</request>"

# A reference starts with "[@N]" at the beginning of a line.
REFERENCE_MARKER = re.compile(r"^\[@(\d+)\][ \t]*", re.MULTILINE)
# An inline citation: "[@0]" or "[@0; @3]".
CITATION = re.compile(r"\[@\d+(?:;\s*@\d+)*\]")


def format_references(texts: Sequence[str]) -> str:
    """The references block to put in a prompt: ``[@i] text`` entries between the tags."""
    body = "\n\n".join(f"[@{i}] {text.strip()}" for i, text in enumerate(texts))
    return f"{REFERENCES_START}\n{body}\n{REFERENCES_END}"


def cite(indices: Sequence[int]) -> str:
    """The inline citation for some references: ``[@0]`` or ``[@0; @2]``."""
    return "[" + "; ".join(f"@{i}" for i in indices) + "]"


def wants_search_query(prompt: str) -> bool:
    """Whether the prompt asks for a search query (contains :data:`QUERY_INSTRUCTION`)."""
    return QUERY_INSTRUCTION in prompt


def request_text(message: str) -> str:
    """The request of a query-writing user message (the text between the request tags, or
    the whole message without them)."""
    start = message.find(REQUEST_START)
    if start < 0:
        return message
    end = message.find(REQUEST_END, start)
    return message[start + len(REQUEST_START): end if end >= 0 else len(message)].strip()


def wants_citations(prompt: str) -> bool:
    """Whether the prompt asks for inline citations (contains :data:`CITATION_INSTRUCTION`)."""
    return CITATION_INSTRUCTION in prompt


def parse_references(prompt: str) -> dict[int, str]:
    """The references listed in a prompt, by index (empty when there are none)."""
    section = prompt
    start = prompt.find(REFERENCES_START)
    if start >= 0:
        end = prompt.find(REFERENCES_END, start)
        section = prompt[start + len(REFERENCES_START): end if end >= 0 else len(prompt)]
    refs: dict[int, str] = {}
    matches = list(REFERENCE_MARKER.finditer(section))
    for i, match in enumerate(matches):
        stop = matches[i + 1].start() if i + 1 < len(matches) else len(section)
        text = section[match.end():stop].strip()
        refs.setdefault(int(match.group(1)), text)
    return refs


def parse_citations(answer: str) -> list[int]:
    """The reference indices an answer cites, in order of first appearance."""
    seen: list[int] = []
    for match in CITATION.finditer(answer):
        for number in re.findall(r"\d+", match.group(0)):
            if int(number) not in seen:
                seen.append(int(number))
    return seen
