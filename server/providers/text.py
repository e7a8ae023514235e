"""Small, dependency-free text helpers shared by the built-in models.

Deterministic everywhere (no ``hash()``, no locale): the same text gives the same tokens,
stems and hashes on every machine and in every process.
"""

from __future__ import annotations

import functools
import re
import unicodedata

# Word pieces with the whitespace before them: what the built-in chat model streams.
PIECE = re.compile(r"\s*(?:\w+|[^\w\s])|\s+")
# Words and punctuation without whitespace: what the cheap tokenizer counts.
COUNT_TOKEN = re.compile(r"\w+|[^\w\s]")
_WORD = re.compile(r"[a-z0-9]+")

STOPWORDS = frozenset("""
a an and are as at be been but by can could did do does for from had has have he her his how i
if in into is it its me my of on or our she so that the their them then there these they this
those to was we were what when where which who whom why will with would you your yours about
than too very just also am not no nor any all each both some such only own same other s t
""".split())  # noqa: SIM905 (one word list reads better)

# Longest first: the first suffix that leaves a stem of 3+ letters is stripped.
_SUFFIXES = ("ational", "fulness", "iveness", "ization", "ations", "ation", "ments", "ment",
             "ness", "ingly", "edly", "ings", "ing", "ies", "ied", "ers", "er", "ed", "ly",
             "es", "s")
_REPLACE = {"ies": "y", "ied": "y", "ational": "ate", "ization": "ize", "ations": "ate",
            "ation": "ate"}


def count_tokens(text: str) -> int:
    """Cheap deterministic token count: words plus punctuation marks."""
    return len(COUNT_TOKEN.findall(text))


def pieces(text: str) -> list[str]:
    """Split text into streamable pieces (each word with the whitespace before it)."""
    return PIECE.findall(text)


def fold(text: str) -> str:
    """Lowercase and strip accents (``Crème Brûlée`` -> ``creme brulee``)."""
    if text.isascii():  # the common case, ten times faster
        return text.lower()
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def words(text: str) -> list[str]:
    """Folded alphanumeric words, stopwords included."""
    return _WORD.findall(fold(text))


@functools.lru_cache(maxsize=65536)
def stem(word: str) -> str:
    """A light English stemmer: strips one common suffix (``running`` -> ``run``)."""
    base = _strip_suffix(word)
    # A final "e" too, so "compute", "computer" and "computing" meet at "comput".
    return base[:-1] if len(base) > 4 and base.endswith("e") else base


def _strip_suffix(word: str) -> str:
    if len(word) <= 3 or word.isdigit():
        return word
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            base = word[: -len(suffix)] + _REPLACE.get(suffix, "")
            if suffix in ("s", "es") and word.endswith(("ss", "us", "is")):
                return word  # "class", "bus", "analysis": not plurals
            if suffix in ("ing", "ed", "er", "ers", "ings") and len(base) >= 4 \
                    and base[-1] == base[-2] and base[-1] not in "lsz":
                base = base[:-1]  # "running" -> "runn" -> "run"
            return base
    return word


def terms(text: str) -> list[str]:
    """Stems of the non-stopword words: what similarity is computed on."""
    return [stem(w) for w in words(text) if w not in STOPWORDS]
