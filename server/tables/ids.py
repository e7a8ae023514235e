"""Time-ordered row ids (UUIDv7, RFC 9562), strictly increasing within a process."""

from __future__ import annotations

import os
import threading
import time
import uuid

_lock = threading.Lock()
_last = 0


def uuid7() -> str:
    """A UUIDv7 string: 48-bit Unix milliseconds, then a 12-bit counter and 62 random bits.

    Ids made in the same millisecond increase through the counter (RFC 9562 method 1), so
    sorting ids sorts rows by creation.
    """
    global _last
    with _lock:
        ms = time.time_ns() // 1_000_000
        candidate = ms << 12
        if candidate <= _last:
            candidate = _last + 1  # same (or earlier) millisecond: bump the counter
        _last = candidate
    rand = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    ms, counter = candidate >> 12, candidate & 0xFFF
    value = (ms << 80) | (0x7 << 76) | (counter << 64) | (0b10 << 62) | rand
    return str(uuid.UUID(int=value))
