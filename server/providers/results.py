"""What model calls return: plain dataclasses the services translate to protobuf."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

FINISH_STOP = "stop"
FINISH_LENGTH = "length"
FINISH_CONTENT_FILTER = "content_filter"


@dataclass(frozen=True)
class Usage:
    """Token counts of one call."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.prompt_tokens + other.prompt_tokens,
                     self.completion_tokens + other.completion_tokens)


_new = object.__new__
_set = object.__setattr__


@dataclass(frozen=True)
class ChatChunk:
    """One piece of a streamed answer.

    Every chunk but the last carries a non-empty ``text`` delta. The last chunk has ``text == ""``
    and ``finish_reason`` set (``stop``, ``length`` or ``content_filter``), with ``usage``,
    ``model`` and, when litellm knows the price, ``cost_usd``.
    """

    text: str = ""
    finish_reason: str | None = None
    usage: Usage | None = None
    model: str = ""
    cost_usd: float | None = None

    @property
    def is_final(self) -> bool:
        return self.finish_reason is not None

    @classmethod
    def delta(cls, text: str) -> ChatChunk:
        """A text-only chunk, made three times faster than through ``__init__`` (a frozen
        dataclass sets each field with ``object.__setattr__``): streams make one per token.
        The other fields read their class defaults, so it equals ``ChatChunk(text=text)``."""
        chunk = _new(cls)
        _set(chunk, "text", text)
        return chunk


@dataclass(frozen=True)
class ChatResult:
    """A whole answer (see :func:`rowforge.server.providers.chat`).

    ``parsed`` holds the decoded JSON when a JSON response format was asked for, else ``None``.
    """

    text: str
    finish_reason: str
    usage: Usage
    model: str
    cost_usd: float | None = None
    parsed: Any = None


@dataclass(frozen=True)
class EmbedResult:
    """Embeddings of a batch: ``vectors`` is float32 of shape ``(len(texts), dim)``."""

    vectors: np.ndarray
    usage: Usage
    model: str = ""


def finish_reason(reason: str | None) -> str:
    """A provider's finish reason as one of ``stop``, ``length``, ``content_filter``."""
    if reason in ("length", "max_tokens"):
        return FINISH_LENGTH
    if reason in ("content_filter", "safety"):
        return FINISH_CONTENT_FILTER
    return FINISH_STOP
