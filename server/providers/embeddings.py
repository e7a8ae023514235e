"""Embeddings: built-in models in-process, the rest through ``litellm.aembedding``."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import numpy as np

from rowforge.server.errors import Internal, InvalidArgument, RowforgeError, Unavailable
from rowforge.server.providers import builtin, litellm_client
from rowforge.server.providers.chat import DEFAULT_TIMEOUT
from rowforge.server.providers.litellm_errors import map_provider_error
from rowforge.server.providers.registry import ModelSpec, capability_missing
from rowforge.server.providers.results import EmbedResult, Usage
from rowforge.server.providers.tokens import count_text_tokens


async def embed(spec: ModelSpec, texts: Sequence[str], *, is_query: bool = False,
                timeout: float | None = None) -> EmbedResult:
    """Embed texts: ``vectors`` is float32 of shape ``(len(texts), spec.embedding_size)``.

    ``is_query`` marks search queries (for models that embed queries differently; the
    built-in ones are symmetric). The configured ``embedding_size`` is checked against what
    the provider returns (it is not sent as ``dimensions``, which many providers reject).

    Raises:
        InvalidArgument: no embed capability, texts not a list of strings.
        Internal: the provider's vectors do not have the configured size (a config error).
        ResourceExhausted / Unavailable / NotFound: see :mod:`litellm_errors`.
    """
    if "embed" not in spec.capabilities:
        raise capability_missing(spec, "embed")
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise InvalidArgument.field("texts", "must be a list of strings")
    if not texts:
        return EmbedResult(np.zeros((0, spec.embedding_size), np.float32), Usage(), spec.id)
    if spec.is_builtin:
        result = await builtin.embed(spec, texts)
    else:
        result = await _litellm_embed(spec, list(texts), is_query=is_query, timeout=timeout)
    if spec.embedding_size and result.vectors.shape[1] != spec.embedding_size:
        raise Internal(f"Model {spec.id!r} returned {result.vectors.shape[1]}-d vectors but is "
                       f"configured with embedding_size {spec.embedding_size}.",
                       reason="EMBEDDING_SIZE_MISMATCH",
                       metadata={"model": spec.id, "returned": result.vectors.shape[1],
                                 "configured": spec.embedding_size})
    return result


async def _litellm_embed(spec: ModelSpec, texts: list[str], *, is_query: bool,
                         timeout: float | None) -> EmbedResult:
    litellm = litellm_client.load()
    kwargs = litellm_client.request_kwargs(spec, input=texts, timeout=timeout or DEFAULT_TIMEOUT)
    try:
        response = await litellm.aembedding(**kwargs)
    except (asyncio.CancelledError, RowforgeError):
        raise
    except Exception as exc:
        raise map_provider_error(exc, model=spec.id) from exc
    try:
        rows = sorted(((_field(item, "index"), _field(item, "embedding"))
                       for item in response.data), key=lambda pair: pair[0] or 0)
        vectors = np.asarray([vector for _, vector in rows], dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(texts):
            raise ValueError(f"expected {len(texts)} vectors, got shape {vectors.shape}")
    except (TypeError, ValueError, AttributeError) as exc:
        raise Unavailable(f"The provider of model {spec.id!r} sent malformed embeddings.",
                          reason="PROVIDER_BAD_RESPONSE", metadata={"model": spec.id}) from exc
    usage_obj = getattr(response, "usage", None)
    prompt_tokens = getattr(usage_obj, "prompt_tokens", None) if usage_obj is not None else None
    if prompt_tokens is None:
        prompt_tokens = sum(count_text_tokens(t) for t in texts)
    return EmbedResult(vectors=vectors, usage=Usage(prompt_tokens=int(prompt_tokens)),
                       model=spec.id)


def _field(item: Any, name: str) -> Any:
    return item.get(name) if isinstance(item, dict) else getattr(item, name)
