"""Reranking through the process's default :class:`~rowforge.server.providers.client.
Providers`, and the pieces around it.

A model with the ``rerank`` capability is called through its backend (Cohere-style
``results[{index, relevance_score}]``). A chat-only model can rerank too: it is asked for a JSON
list of relevance scores (one per document, 0 to 1), validated with a JSON Schema.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rowforge.server.errors import Unavailable, Violations
from rowforge.server.providers import prompts
from rowforge.server.providers.formats import json_schema_format
from rowforge.server.providers.messages import Message
from rowforge.server.providers.registry import ModelSpec

CHAT_RERANK_SYSTEM = (
    "You rank documents by how relevant they are to a query. Answer with JSON only: "
    '{"scores": [...]} holding one relevance score between 0 and 1 per document, in the '
    "order the documents are listed."
)


async def rerank(spec: ModelSpec, query: str, documents: Sequence[str], top_n: int = 0, *,
                 timeout: float | None = None) -> list[tuple[int, float]]:
    """``(document index, relevance score)`` pairs, best first; ``top_n`` 0 keeps all.

    Raises:
        InvalidArgument: empty query, documents not strings, negative ``top_n``, or a model
            with neither the ``rerank`` nor the ``chat`` capability.
        ResourceExhausted / Unavailable / NotFound: see :mod:`litellm_errors`.
    """
    from rowforge.server.providers.client import default_providers

    return await default_providers().rerank(spec, query, documents, top_n, timeout=timeout)


def check_rerank_call(query: str, documents: Sequence[str], top_n: int) -> None:
    v = Violations()
    v.check(isinstance(query, str) and bool(query.strip()), "query", "must not be empty")
    v.check(not isinstance(documents, str) and all(isinstance(d, str) for d in documents),
            "documents", "must be a list of strings")
    v.check(isinstance(top_n, int) and top_n >= 0, "top_n", "must not be negative")
    v.raise_if_any()


def best_first(spec: ModelSpec, ranked: Sequence[tuple[int, float]], count: int,
               top_n: int) -> list[tuple[int, float]]:
    """The ranking sorted by score (ties by index) and cut to ``top_n`` (0: all).

    Raises:
        Unavailable: ``PROVIDER_BAD_RESPONSE`` when an index is not one of the documents.
    """
    if any(not 0 <= i < count for i, _ in ranked):
        raise Unavailable(f"The provider of model {spec.id!r} sent a malformed ranking.",
                          reason="PROVIDER_BAD_RESPONSE", metadata={"model": spec.id})
    ordered = sorted(ranked, key=lambda pair: (-pair[1], pair[0]))
    return ordered[:top_n] if top_n > 0 else ordered


def chat_rerank_call(query: str, documents: Sequence[str]) -> tuple[list[Message], Any]:
    """The messages and response format asking a chat model for one score per document."""
    n = len(documents)
    schema = {"type": "object", "required": ["scores"], "additionalProperties": False,
              "properties": {"scores": {"type": "array", "minItems": n, "maxItems": n,
                                        "items": {"type": "number", "minimum": 0,
                                                  "maximum": 1}}}}
    user = f"Query: {query}\n\nDocuments:\n{prompts.format_references(list(documents))}"
    return ([Message("system", CHAT_RERANK_SYSTEM), Message("user", user)],
            json_schema_format(schema, name="ranking"))
