"""Pure-Python reference for Reciprocal Rank Fusion (the oracle for ``_rrf.pyx``)."""

from __future__ import annotations

import heapq
import math
import numbers
import operator
from collections.abc import Hashable, Iterable, Sequence


def _real(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{what} must be real numbers, got {type(value).__name__}")
    return float(value)


def check_args(
    n_lists: int, k: float, weights: Iterable[float] | None, top_k: int | None
) -> tuple[float, list[float], int | None]:
    """Validate and normalise ``rrf``'s parameters; shared by both implementations."""
    k = _real(k, "k")
    if not math.isfinite(k) or k < 0:
        raise ValueError(f"k must be a finite number >= 0, got {k!r}")
    if weights is None:
        ws = [1.0] * n_lists
    else:
        ws = [_real(w, "weights") for w in weights]
        if len(ws) != n_lists:
            raise ValueError(f"got {len(ws)} weights for {n_lists} ranked lists")
        for w in ws:
            if not math.isfinite(w) or w < 0:
                raise ValueError(f"weights must be finite numbers >= 0, got {w!r}")
    if top_k is not None:
        top_k = operator.index(top_k)
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1 (or None for all), got {top_k!r}")
    return k, ws, top_k


def rrf(
    ranked_lists: Iterable[Iterable[Hashable]],
    k: float = 60,
    weights: Sequence[float] | None = None,
    top_k: int | None = 10,
) -> list[tuple[Hashable, float]]:
    """Fuse ranked lists with Reciprocal Rank Fusion.

    ``score(id) = sum over lists of weight_i / (k + rank)``, ranks counted from 1. An id that
    appears more than once in one list counts at its best (first) rank only.

    Ties are broken deterministically: higher score first, then the better (smaller) best rank
    across all lists, then first appearance (lists in order, each from its top).

    Args:
        ranked_lists: Lists of ids (any hashable: str, int, ...), each best first.
        k: Smoothing constant, a finite number >= 0 (0 gives 1/rank).
        weights: One finite weight >= 0 per list; ``None`` weighs every list 1.
        top_k: How many results to return, >= 1; ``None`` returns every id.

    Returns:
        ``(id, score)`` pairs, best first.

    Raises:
        ValueError: ``k``, ``weights`` or ``top_k`` is out of range, or the number of weights
            differs from the number of lists.
    """
    lists = [list(ranked) for ranked in ranked_lists]
    k, ws, top_k = check_args(len(lists), k, weights, top_k)
    score: dict[Hashable, float] = {}
    best_rank: dict[Hashable, int] = {}
    order: dict[Hashable, int] = {}  # first appearance
    for ranked, weight in zip(lists, ws, strict=True):
        seen: set[Hashable] = set()
        for rank, item in enumerate(ranked, start=1):
            if item in seen:
                continue
            seen.add(item)
            contribution = weight / (k + rank)
            if item in score:
                score[item] += contribution
                best_rank[item] = min(best_rank[item], rank)
            else:
                score[item] = contribution
                best_rank[item] = rank
                order[item] = len(order)

    def key(item: Hashable) -> tuple[float, int, int]:
        return (-score[item], best_rank[item], order[item])

    if top_k is None or top_k >= len(score):
        chosen = sorted(score, key=key)
    else:
        chosen = heapq.nsmallest(top_k, score, key=key)
    return [(item, score[item]) for item in chosen]
