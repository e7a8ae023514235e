"""A brute-force BM25 over the same tokens as the lexical index: the oracle its answers are
checked against (tests and ``bench/bench_knowledge.py``).

Same formula and parameters as tantivy (``src/query/bm25.rs``): k1 = 1.2, b = 0.75,
``idf = ln(1 + (N - df + 0.5) / (df + 0.5))``, a document's length rounded down to tantivy's
one-byte field-norm scale (Lucene's), float32 arithmetic. Every document is scored: no pruning.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from collections.abc import Collection, Iterable, Sequence

import numpy as np

K1 = np.float32(1.2)
B = np.float32(0.75)


def _decode_norm(byte: int) -> int:
    # tantivy/Lucene: identity up to 24, then 3 mantissa bits on a log scale.
    if byte < 24:
        return byte
    b = byte - 24
    bits, shift = b & 7, b >> 3
    return 24 + (bits if shift == 0 else (bits | 8) << (shift - 1))


NORMS = [_decode_norm(i) for i in range(256)]


def quantized_length(length: int) -> int:
    """A document length as tantivy scores it."""
    return NORMS[bisect.bisect_right(NORMS, length) - 1]


class BM25Oracle:
    """Postings of ``docs`` (id -> tokens), restricted to ``vocabulary`` if given (the query
    terms: enough to score them, far less memory than every term)."""

    def __init__(self, docs: Iterable[tuple[str, Sequence[str]]],
                 vocabulary: Collection[str] | None = None) -> None:
        self.postings: dict[str, dict[str, int]] = {}
        self.lengths: dict[str, int] = {}
        total = 0
        for doc_id, tokens in docs:
            total += len(tokens)
            self.lengths[doc_id] = quantized_length(len(tokens))
            counts = Counter(tokens)
            for term, tf in counts.items():
                if vocabulary is None or term in vocabulary:
                    self.postings.setdefault(term, {})[doc_id] = tf
        self.n = len(self.lengths)
        self.avgdl = np.float32(total) / np.float32(max(1, self.n))

    def scores(self, terms: Iterable[str]) -> dict[str, float]:
        """Every document holding a term, with its BM25 score."""
        out: dict[str, np.float32] = {}
        for term in dict.fromkeys(terms):
            posting = self.postings.get(term, {})
            if not posting:
                continue
            x = np.float32(self.n - len(posting) + 0.5) / np.float32(len(posting) + 0.5)
            weight = np.float32(math.log1p(float(x))) * (np.float32(1) + K1)
            for doc_id, tf in posting.items():
                norm = K1 * (np.float32(1) - B + B * np.float32(self.lengths[doc_id])
                             / self.avgdl)
                tf32 = np.float32(tf)
                out[doc_id] = out.get(doc_id, np.float32(0)) + weight * tf32 / (tf32 + norm)
        return {d: float(s) for d, s in out.items()}

    def top(self, terms: Iterable[str], n: int,
            allowed: Collection[str] | None = None) -> list[tuple[str, float]]:
        """The ``n`` best (id, score), best first (ties in id order)."""
        scored = self.scores(terms)
        ranked = sorted(((d, s) for d, s in scored.items() if allowed is None or d in allowed),
                        key=lambda p: (-p[1], p[0]))
        return ranked[:n]


def same_ranking(found: Sequence[tuple[str, float]], oracle: BM25Oracle,
                 terms: Sequence[str], n: int, allowed: Collection[str] | None = None,
                 rel: float = 1e-5) -> bool:
    """Whether ``found`` is a correct top ``n``: as many hits as the oracle's, each hit's score
    is its oracle score, and the scores are the oracle's best ``n`` in order (so it differs
    from the oracle's list at most in the order of equal scores)."""
    expected = oracle.top(terms, n, allowed)
    scored = oracle.scores(terms)
    if len(found) != len(expected):
        return False

    def close(a: float, b: float) -> bool:
        return abs(a - b) <= rel * max(1.0, abs(a), abs(b))

    return all(doc_id in scored and (allowed is None or doc_id in allowed)
               and close(score, scored[doc_id]) and close(score, want)
               for (doc_id, score), (_, want) in zip(found, expected, strict=True))
