"""``rowforge/rerank``: BM25 over stems blended with hashed-embedding cosine (offline).

``score = 0.7 * bm25 / (bm25 + 1) + 0.3 * max(cosine, 0)``, in ``[0, 1)``. BM25 (k1=1.2,
b=0.75) uses the candidate documents themselves as the collection, as rerankers see only
those; the squash keeps scores comparable across queries. Cosine on :mod:`hashing_embedder`
vectors rewards partial overlap (character grams) that BM25 misses.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np

from rowforge.server.providers import text as textutil
from rowforge.server.providers.hashing_embedder import embed_texts

K1 = 1.2
B = 0.75
LEXICAL_SHARE = 0.7


def bm25_scores(query: str, documents: Sequence[str]) -> list[float]:
    """BM25 of each document for the query's stems (the documents are the collection)."""
    docs = [Counter(textutil.terms(d)) for d in documents]
    query_terms = set(textutil.terms(query))
    if not docs or not query_terms:
        return [0.0] * len(docs)
    lengths = [sum(d.values()) for d in docs]
    average = (sum(lengths) / len(docs)) or 1.0
    scores = []
    for doc, length in zip(docs, lengths, strict=True):
        score = 0.0
        for term in query_terms:
            tf = doc.get(term, 0)
            if not tf:
                continue
            df = sum(1 for d in docs if term in d)
            idf = math.log(1 + (len(docs) - df + 0.5) / (df + 0.5))
            score += idf * tf * (K1 + 1) / (tf + K1 * (1 - B + B * length / average))
        scores.append(score)
    return scores


def rerank(query: str, documents: Sequence[str], top_n: int = 0) -> list[tuple[int, float]]:
    """``(index, score)`` pairs, best first (ties by index); ``top_n`` 0 keeps all."""
    if not documents:
        return []
    lexical = bm25_scores(query, documents)
    vectors = embed_texts([query, *documents])
    cosine = vectors[1:] @ vectors[0]
    scored = [(i, float(LEXICAL_SHARE * s / (s + 1.0)
                        + (1 - LEXICAL_SHARE) * max(float(np.float32(c)), 0.0)))
              for i, (s, c) in enumerate(zip(lexical, cosine, strict=True))]
    scored.sort(key=lambda pair: (-pair[1], pair[0]))
    return scored[:top_n] if top_n > 0 else scored
