"""RAG for LLM columns: the engine's ``app.rag`` hook.

For a cell of an LLM column with ``rag_params``, the engine calls :meth:`RagRetriever.retrieve`
with the rendered search query (or, without one, the rendered prompt), sends the returned
references to the client before the cell's first token, stores them with the cell, and builds
the model's prompt with :meth:`RagRetriever.augment_prompt`.

Query formulation without a ``search_query``: the rendered prompt itself, with markup tags
removed and whitespace collapsed, cut to its first and last 500 characters when longer (the
question is usually at one end of a long template). Deterministic and free; asking the chat
model to rewrite the prompt would cost a model call per cell for little gain with hybrid
search, whose BM25 side already ignores stopwords and very common words.
"""

from __future__ import annotations

import re
from typing import Any

from rowforge.server.knowledge.search import MAX_QUERY_CHARS as SEARCH_QUERY_CHARS
from rowforge.server.knowledge.search import HybridSearcher
from rowforge.server.providers.prompts import CITATION_INSTRUCTION, format_references
from rowforge.server.tables.model import (
    KT_FILE_ID,
    KT_PAGE,
    KT_TEXT,
    KT_TITLE,
    Chunk,
    RAGParams,
    References,
)

#: Longest formulated query; longer prompts keep their two ends.
MAX_QUERY_CHARS = 1000
REFERENCES_LEAD = "Use the following references to answer when they are relevant."

_TAG = re.compile(r"</?[A-Za-z][\w.:-]*(?:\s[^<>]*)?/?>")
_SPACE = re.compile(r"\s+")


def formulate_query(prompt: str) -> str:
    """A search query from a rendered prompt (see the module docstring)."""
    text = _SPACE.sub(" ", _TAG.sub(" ", prompt)).strip()
    if len(text) <= MAX_QUERY_CHARS:
        return text
    half = MAX_QUERY_CHARS // 2
    return f"{text[:half].rstrip()} {text[-half:].lstrip()}"


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
        tables: The table store (``app.tables``).
        searcher: The hybrid searcher.
    """

    def __init__(self, tables: Any, searcher: HybridSearcher) -> None:
        self.tables = tables
        self.searcher = searcher

    async def retrieve(self, project_id: str, params: RAGParams, query: str,
                       row: dict[str, Any]) -> References:
        """The top ``params.k`` chunks of the knowledge table for this cell.

        Args:
            project_id: The project of the table being generated.
            params: The column's RAG settings.
            query: The rendered ``search_query``, or the rendered prompt when it has none.
            row: The row's values so far (unused: the query is already rendered).

        Raises:
            NotFound: the knowledge table (or the reranking model) no longer exists.
            FailedPrecondition / Unavailable: the embedding model cannot embed the query.
        """
        schema = await self.tables.get_table(project_id, "knowledge", params.table_id)
        text = query.strip() if params.search_query else formulate_query(query)
        if not text:
            return References(table_id=params.table_id, search_query="", chunks=())
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
        return References(table_id=params.table_id, search_query=text, chunks=tuple(chunks))

    def augment_prompt(self, prompt: str, references: References, params: RAGParams) -> str:
        """See :func:`augment_prompt`."""
        return augment_prompt(prompt, references, params)
