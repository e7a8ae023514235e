"""Waiting for something to become true in tests (polling: servers and workers give no event
to await)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any


async def eventually(check: Callable[[], Any], timeout: float = 20.0, every: float = 0.01,
                     what: str = "") -> float:
    """Wait until ``check()`` (sync or async) is truthy; return the seconds waited.

    Raises:
        TimeoutError: not within ``timeout`` (naming ``what`` when given).
    """
    start = time.monotonic()
    deadline = start + timeout
    while True:
        outcome = check()
        if asyncio.iscoroutine(outcome):
            outcome = await outcome
        if outcome:
            return time.monotonic() - start
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout} s: {what or check}")
        await asyncio.sleep(every)


def eventually_sync(check: Callable[[], Any], timeout: float = 20.0, every: float = 0.05,
                    what: str = "") -> float:
    """:func:`eventually` for synchronous tests."""
    start = time.monotonic()
    deadline = start + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout} s: {what or check}")
        time.sleep(every)
    return time.monotonic() - start
