"""Token estimates for rate limiting and history trimming (cheap, offline).

Uses tiktoken's ``cl100k_base`` when its encoding file is already on disk (litellm ships one,
found without importing litellm), so nothing is ever downloaded; otherwise about 4 characters
per token. Either way it is an estimate: providers count with their own tokenizers.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from rowforge.server.providers.messages import Message, coerce_messages

# OpenAI's accounting: a few tokens of framing per message, a flat cost per image.
TOKENS_PER_MESSAGE = 4
TOKENS_PER_ATTACHMENT = 85

_CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"


def _bundled_tiktoken_dir() -> Path | None:
    """litellm's bundled tiktoken cache, when it holds cl100k_base (never imports litellm)."""
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "litellm_core_utils" / "tokenizers"
    # tiktoken names cached files by the sha1 of their URL.
    cached = folder / hashlib.sha1(_CL100K_URL.encode()).hexdigest()
    return folder if cached.is_file() else None


@functools.cache
def _encoder() -> Callable[[str], int]:
    try:
        import tiktoken

        folder = _bundled_tiktoken_dir()
        if folder is None:
            raise LookupError("no offline cl100k_base")
        # Same folder litellm points tiktoken at when it is imported; setdefault keeps any
        # explicit choice of the operator.
        os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(folder))
        if Path(os.environ["TIKTOKEN_CACHE_DIR"]) != folder:
            raise LookupError("TIKTOKEN_CACHE_DIR points elsewhere; not risking a download")
        encoding = tiktoken.get_encoding("cl100k_base")
        return lambda text: len(encoding.encode(text, disallowed_special=()))
    except Exception:  # any failure: fall back to the character estimate
        return lambda text: (len(text) + 3) // 4


def count_text_tokens(text: str) -> int:
    """Estimated tokens of one text."""
    return _encoder()(text) if text else 0


def estimate_tokens(messages: Iterable[Message | Mapping[str, Any]]) -> int:
    """Estimated prompt tokens of a chat request (text, framing and attachments)."""
    total = 3  # the assistant's reply is primed with a few tokens
    for message in coerce_messages(messages):
        total += TOKENS_PER_MESSAGE + count_text_tokens(message.content)
        total += TOKENS_PER_ATTACHMENT * len(message.attachments)
    return total


def trim_history(messages: Sequence[Message | Mapping[str, Any]], context_length: int,
                 reserve_output: int) -> list[Message]:
    """Drop the oldest non-system turns until the prompt fits ``context_length - reserve_output``.

    System messages and the last message are always kept (the answer is about the last turn),
    so the result may still be too long when those alone exceed the budget; the provider then
    reports ``CONTEXT_WINDOW_EXCEEDED``.
    """
    kept = coerce_messages(messages)
    budget = context_length - reserve_output
    sizes = [TOKENS_PER_MESSAGE + count_text_tokens(m.content)
             + TOKENS_PER_ATTACHMENT * len(m.attachments) for m in kept]
    total = 3 + sum(sizes)
    index = 0
    while total > budget and index < len(kept) - 1:
        if kept[index].role in ("system", "developer"):
            index += 1
            continue
        total -= sizes.pop(index)
        kept.pop(index)
    return kept
