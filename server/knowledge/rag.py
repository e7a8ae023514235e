"""RAG for LLM columns: the row engine's retriever.

For a cell of an LLM column with ``rag_params``, the engine calls :meth:`RagRetriever.retrieve`
with the rendered search query (or, without one, the rendered prompt), sends the returned
references to the client before the cell's first token, stores them with the cell, and builds
the model's prompt with :meth:`RagRetriever.augment_prompt`.

Where the search query comes from, in order:

1. ``search_query`` (a template of the column): rendered, used as is.
2. ``generate_query`` (the default, the seeds' "formulate query" step): the column's model
   writes it from the rendered prompt (:func:`query_messages`; prompts longer than
   :data:`MAX_QUERY_PROMPT_CHARS` keep their two ends), through the engine's ``write_query``
   callable (its retries, model slots and deadline). The answer's first line is the query
   (:func:`clean_query`); the model and the call's usage are recorded in the references. An
   empty answer falls back to 3. The built-in offline chat model answers with the request's
   key terms, so the flow works offline.
3. Otherwise the rendered prompt itself (:func:`formulate_query`): markup tags removed,
   whitespace collapsed, cut to its first and last 500 characters when longer (the question
   is usually at one end of a long template). Deterministic and free of a model call.

The knowledge table is looked up first: a column whose table was deleted (a *dangling*
reference) fails its cell with ``KNOWLEDGE_TABLE_NOT_FOUND`` naming the table, before any
model call.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from rowforge.server.errors import NotFound
from rowforge.server.knowledge.search import MAX_QUERY_CHARS as SEARCH_QUERY_CHARS
from rowforge.server.knowledge.search import HybridSearcher
from rowforge.server.providers import ChatResult, Message
from rowforge.server.providers.prompts import (
    CITATION_INSTRUCTION,
    QUERY_INSTRUCTION,
    REQUEST_END,
    REQUEST_START,
    format_references,
)
from rowforge.server.tables.model import (
    KT_FILE_ID,
    KT_PAGE,
    KT_TEXT,
    KT_TITLE,
    CellUsage,
    Chunk,
    RAGParams,
    References,
)

#: Longest formulated query; longer prompts keep their two ends.
MAX_QUERY_CHARS = 1000
#: Longest prompt given to the model that writes the query (two ends kept).
MAX_QUERY_PROMPT_CHARS = 4000

QueryWriter = Callable[[Sequence[Message]], Awaitable[ChatResult]]
"""The engine's chat call for writing a query: messages -> the model's answer."""
REFERENCES_LEAD = "Use the following references to answer when they are relevant."

_TAG = re.compile(r"</?[A-Za-z][\w.:-]*(?:\s[^<>]*)?/?>")
_SPACE = re.compile(r"\s+")


def _two_ends(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half].rstrip()} {text[-half:].lstrip()}"


def formulate_query(prompt: str) -> str:
    """A search query from a rendered prompt (see the module docstring)."""
    return _two_ends(_SPACE.sub(" ", _TAG.sub(" ", prompt)).strip(), MAX_QUERY_CHARS)


def query_messages(prompt: str) -> list[Message]:
    """What the column's model is asked to write the search query from."""
    request = _two_ends(prompt.strip(), MAX_QUERY_PROMPT_CHARS)
    return [Message("system", QUERY_INSTRUCTION),
            Message("user", f"{REQUEST_START}\n{request}\n{REQUEST_END}")]


_LABEL = re.compile(r"^(?:search\s+)?query\s*:\s*", re.IGNORECASE)
_QUOTES = "\"'`“”‘’"


def clean_query(answer: str) -> str:
    """The query in a model's answer: its first non-empty line, without a ``Query:`` label
    or surrounding quotes, whitespace collapsed, at most :data:`MAX_QUERY_CHARS`."""
    line = next((ln for ln in answer.splitlines() if ln.strip()), "")
    line = _LABEL.sub("", line.strip()).strip().strip(_QUOTES).strip()
    return _SPACE.sub(" ", line)[:MAX_QUERY_CHARS].strip()


def reference_text(chunk: Chunk) -> str:
    """One reference as the model sees it: a title line (with the page), then the content."""
    head = ""
    if chunk.title or chunk.page:
        head = f"Title: {chunk.title or '(untitled)'}"
        if chunk.page:
            head += f", page {chunk.page}"
    return f"{head}\n{chunk.text}" if head else chunk.text


def augment_prompt(prompt: str, references: References, params: RAGParams) -> str:
    """The prompt preceded by its references block (and the citation instruction when the
    column asks for inline citations)."""
    texts = [reference_text(c) for c in references.chunks]
    if not texts:
        return prompt
    parts = [REFERENCES_LEAD, format_references(texts)]
    if params.inline_citations:
        parts.append(CITATION_INSTRUCTION)
    parts.append(prompt)
    return "\n\n".join(parts)


class RagRetriever:
    """Finds the references of RAG cells through hybrid search.

    Args:
        tables: The table store.
        searcher: The hybrid searcher.
    """

    def __init__(self, tables: Any, searcher: HybridSearcher) -> None:
        self.tables = tables
        self.searcher = searcher

    async def retrieve(self, project_id: str, params: RAGParams, query: str,
                       row: dict[str, Any], *,
                       write_query: QueryWriter | None = None) -> References:
        """The top ``params.k`` chunks of the knowledge table for this cell.

        Args:
            project_id: The project of the table being generated.
            params: The column's RAG settings.
            query: The rendered ``search_query``, or the rendered prompt when it has none.
            row: The row's values so far (unused: the query is already rendered).
            write_query: The engine's call to the column's model, used to write the query
                when ``params.generate_query`` (None: the prompt is the query).

        Raises:
            NotFound: ``KNOWLEDGE_TABLE_NOT_FOUND`` (the table was deleted), or the reranking
                model no longer exists.
            FailedPrecondition / Unavailable: the embedding model cannot embed the query, or
                the chat model failed to write it.
        """
        schema = await self._knowledge_table(project_id, params.table_id)
        written: ChatResult | None = None
        if params.search_query:
            text = query.strip()
        elif params.generate_query and write_query is not None and query.strip():
            written = await write_query(query_messages(query))
            text = clean_query(written.text) or formulate_query(query)
        else:
            text = formulate_query(query)
        model, usage = "", None
        if written is not None:
            model = written.model
            usage = CellUsage(written.usage.prompt_tokens, written.usage.completion_tokens)
        if not text:
            return References(table_id=params.table_id, search_query="", query_model=model,
                              query_usage=usage)
        outcome = await self.searcher.search(
            schema, text[:SEARCH_QUERY_CHARS], k=params.k,
            reranking_model=params.reranking_model,
            columns=[KT_TITLE, KT_TEXT, KT_FILE_ID, KT_PAGE])
        chunks = []
        for hit in outcome.hits:
            cells = hit.row.cells

            def value(column: str, cells: Any = cells) -> Any:
                cell = cells.get(column)
                return cell.value if cell is not None else None

            page = value(KT_PAGE)
            chunks.append(Chunk(row_id=hit.row.id, title=value(KT_TITLE) or "",
                                text=value(KT_TEXT) or "",
                                page=int(page) if page is not None else None,
                                file_id=value(KT_FILE_ID) or "", score=hit.score))
        return References(table_id=params.table_id, search_query=text, chunks=tuple(chunks),
                          query_model=model, query_usage=usage)

    async def _knowledge_table(self, project_id: str, table_id: str) -> Any:
        try:
            return await self.tables.get_table(project_id, "knowledge", table_id)
        except NotFound as exc:
            if exc.reason != "TABLE_NOT_FOUND":
                raise
            raise NotFound(
                f"RAG knowledge table {table_id!r} does not exist (it was deleted?); create "
                f"a knowledge table {table_id!r} again or change this column's "
                "rag_params.table_id", reason="KNOWLEDGE_TABLE_NOT_FOUND",
                metadata={"tableId": table_id}, resource_type="knowledge table",
                resource_name=table_id) from None

    def augment_prompt(self, prompt: str, references: References, params: RAGParams) -> str:
        """See :func:`augment_prompt`."""
        return augment_prompt(prompt, references, params)
