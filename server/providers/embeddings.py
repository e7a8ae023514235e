"""Embeddings through the process's default :class:`~rowforge.server.providers.client.
Providers`, and the checks around every embedding call."""

from __future__ import annotations

from collections.abc import Sequence

from rowforge.server.errors import Internal, InvalidArgument
from rowforge.server.providers.registry import ModelSpec, capability_missing
from rowforge.server.providers.results import EmbedResult


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
    from rowforge.server.providers.client import default_providers

    return await default_providers().embed(spec, texts, is_query=is_query, timeout=timeout)


def check_embed_call(spec: ModelSpec, texts: Sequence[str]) -> None:
    """Raise ``InvalidArgument`` unless ``spec`` embeds and ``texts`` is a list of strings."""
    if "embed" not in spec.capabilities:
        raise capability_missing(spec, "embed")
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise InvalidArgument.field("texts", "must be a list of strings")


def check_embedding_size(spec: ModelSpec, result: EmbedResult) -> EmbedResult:
    """``result``, once its vectors are known to have the configured size."""
    if spec.embedding_size and result.vectors.shape[1] != spec.embedding_size:
        raise Internal(f"Model {spec.id!r} returned {result.vectors.shape[1]}-d vectors but is "
                       f"configured with embedding_size {spec.embedding_size}.",
                       reason="EMBEDDING_SIZE_MISMATCH",
                       metadata={"model": spec.id, "returned": result.vectors.shape[1],
                                 "configured": spec.embedding_size})
    return result
