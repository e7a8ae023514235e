"""Reranking: built-in in-process, ``litellm.arerank`` for rerank models, and a chat fallback.

A model with the ``rerank`` capability is called through litellm's rerank API (Cohere-style
``results[{index, relevance_score}]``). A chat-only model can rerank too: it is asked for a JSON
list of relevance scores (one per document, 0 to 1), validated with a JSON Schema.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from rowforge.server.errors import RowforgeError, Unavailable, Violations
from rowforge.server.providers import builtin, litellm_client, prompts
from rowforge.server.providers.chat import DEFAULT_TIMEOUT, chat
from rowforge.server.providers.formats import json_schema_format
from rowforge.server.providers.litellm_errors import map_provider_error
from rowforge.server.providers.messages import Message
from rowforge.server.providers.registry import ModelSpec, capability_missing

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
    v = Violations()
    v.check(isinstance(query, str) and bool(query.strip()), "query", "must not be empty")
    v.check(not isinstance(documents, str) and all(isinstance(d, str) for d in documents),
            "documents", "must be a list of strings")
    v.check(isinstance(top_n, int) and top_n >= 0, "top_n", "must not be negative")
    v.raise_if_any()
    if not documents:
        return []
    if "rerank" in spec.capabilities:
        if spec.is_builtin:
            return await builtin.rerank(spec, query, documents, top_n)
        return await _litellm_rerank(spec, query, list(documents), top_n, timeout)
    if "chat" in spec.capabilities:
        return await _chat_rerank(spec, query, list(documents), top_n, timeout)
    raise capability_missing(spec, "rerank")


async def _litellm_rerank(spec: ModelSpec, query: str, documents: list[str], top_n: int,
                          timeout: float | None) -> list[tuple[int, float]]:
    litellm = litellm_client.load()
    kwargs = litellm_client.request_kwargs(spec, query=query, documents=documents, top_n=top_n or None,
                      timeout=timeout or DEFAULT_TIMEOUT)
    try:
        response = await litellm.arerank(**kwargs)
    except (asyncio.CancelledError, RowforgeError):
        raise
    except Exception as exc:
        raise map_provider_error(exc, model=spec.id) from exc
    try:
        ranked = [(int(_field(r, "index")), float(_field(r, "relevance_score")))
                  for r in response.results]
        if any(not 0 <= i < len(documents) for i, _ in ranked):
            raise ValueError("index out of range")
    except (TypeError, ValueError, AttributeError, KeyError) as exc:
        raise Unavailable(f"The provider of model {spec.id!r} sent a malformed ranking.",
                          reason="PROVIDER_BAD_RESPONSE", metadata={"model": spec.id}) from exc
    ranked.sort(key=lambda pair: (-pair[1], pair[0]))
    return ranked[:top_n] if top_n > 0 else ranked


async def _chat_rerank(spec: ModelSpec, query: str, documents: list[str], top_n: int,
                       timeout: float | None) -> list[tuple[int, float]]:
    n = len(documents)
    schema = {"type": "object", "required": ["scores"], "additionalProperties": False,
              "properties": {"scores": {"type": "array", "minItems": n, "maxItems": n,
                                        "items": {"type": "number", "minimum": 0,
                                                  "maximum": 1}}}}
    user = f"Query: {query}\n\nDocuments:\n{prompts.format_references(documents)}"
    result = await chat(spec, [Message("system", CHAT_RERANK_SYSTEM), Message("user", user)],
                        temperature=0.0, response_format=json_schema_format(schema,
                                                                            name="ranking"),
                        timeout=timeout)
    scores = result.parsed["scores"]
    ranked = sorted(((i, float(s)) for i, s in enumerate(scores)), key=lambda p: (-p[1], p[0]))
    return ranked[:top_n] if top_n > 0 else ranked


def _field(item: Any, name: str) -> Any:
    return item[name] if isinstance(item, dict) else getattr(item, name)


