"""``rowforge/embed``: a 384-d hashed bag-of-features embedder (offline, deterministic, fast).

Features of the folded, lightly stemmed text (:mod:`text`), stopwords dropped:

* word unigrams (weight 1.0) and bigrams (0.6) of stems, each hashed to two signed slots,
* character 3-5-grams of each word with boundary marks (0.25 in total per word), so
  misspellings and unstemmed variants still overlap.

Each feature is hashed with blake2b (stable across processes and platforms, unlike ``hash()``)
to dimensions and signs; counts get sublinear tf (``1 + ln tf``) and the vector is
L2-normalised. An empty text maps to one fixed unit vector. Queries and documents are embedded
the same way.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import math
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from rowforge.server.providers import text as textutil

DIMENSIONS = 384
UNIGRAM_WEIGHT = 1.0
BIGRAM_WEIGHT = 0.6
CHARGRAM_WEIGHT = 0.25
_EMPTY = "\x00empty"


@functools.lru_cache(maxsize=262144)
def _slots(feature: str) -> tuple[tuple[int, float], ...]:
    """Where a feature lands: word features in two signed slots (so one hash collision costs
    half as much), character grams in one."""
    digest = hashlib.blake2b(feature.encode("utf-8"), digest_size=16).digest()
    count = 1 if feature.startswith("#") else 2
    scale = 1.0 / math.sqrt(count)
    slots = []
    for i in range(count):
        part = int.from_bytes(digest[8 * i: 8 * i + 8], "little")
        slots.append((part % DIMENSIONS, scale if (part >> 63) & 1 else -scale))
    return tuple(slots)


@functools.lru_cache(maxsize=65536)
def _chargrams(word: str) -> tuple[str, ...]:
    marked = f"<{word}>"
    return tuple(f"#{marked[i:i + n]}" for n in (3, 4, 5) for i in range(len(marked) - n + 1))


def features(text: str) -> dict[str, float]:
    """Weighted features of one text (before hashing and tf damping)."""
    words = [w for w in textutil.words(text) if w not in textutil.STOPWORDS]
    stems = [textutil.stem(w) for w in words]
    counts: defaultdict[str, float] = defaultdict(float)
    for s in stems:
        counts[s] += UNIGRAM_WEIGHT
    for a, b in itertools.pairwise(stems):
        counts[f"{a} {b}"] += BIGRAM_WEIGHT
    for w in words:
        grams = _chargrams(w)
        share = CHARGRAM_WEIGHT / len(grams) * 4  # about 4 grams' worth of weight per word
        for g in grams:
            counts[g] += share
    return counts


def embed_texts(texts: Sequence[str]) -> np.ndarray:
    """L2-normalised float32 vectors of shape ``(len(texts), 384)``."""
    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    for row, text in enumerate(texts):
        counts = features(text) or {_EMPTY: 1.0}
        for feature, weight in counts.items():
            # Sublinear tf on the weighted count: repeats help, but less and less.
            damped = 1.0 + math.log(weight) if weight >= 1.0 else weight
            for col, sign in _slots(feature):
                rows.append(row)
                cols.append(col)
                vals.append(sign * damped)
    matrix = np.zeros((len(texts), DIMENSIONS), dtype=np.float32)
    if rows:
        np.add.at(matrix, (np.asarray(rows), np.asarray(cols)), np.asarray(vals, np.float32))
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    empty = norms[:, 0] == 0  # features cancelled out: fall back to the fixed vector
    if empty.any():
        matrix[empty] = 0
        for col, sign in _slots(_EMPTY):
            matrix[empty, col] = sign
        norms[empty] = 1.0
    return matrix / norms
