"""Retrying transient provider failures: exponential backoff, full jitter, ``Retry-After``."""

from __future__ import annotations

import asyncio
import inspect
import random
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from rowforge.server.providers.litellm_errors import is_retryable, retry_after

T = TypeVar("T")

OnRetry = Callable[[int, BaseException, float], Any]


def backoff_delay(attempt: int, *, base_delay: float, max_delay: float, jitter: bool,
                  rng: Callable[[], float] = random.random) -> float:
    """Delay before retry number ``attempt`` (1-based): ``min(max, base * 2**(attempt-1))``,
    uniformly jittered in ``[0, that]`` with full jitter."""
    ceiling = min(max_delay, base_delay * (2 ** (attempt - 1)))
    return ceiling * rng() if jitter else ceiling


async def with_retries(fn: Callable[[], Awaitable[T]], *, max_attempts: int = 4,
                       base_delay: float = 0.5, max_delay: float = 30.0, jitter: bool = True,
                       on_retry: OnRetry | None = None,
                       sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
                       rng: Callable[[], float] = random.random) -> T:
    """Call ``fn()`` until it succeeds, retrying only retryable errors.

    The wait before a retry is the backoff delay, but never less than the error's
    ``retry_after`` (which may exceed ``max_delay``: the provider knows best). Non-retryable
    errors and the last attempt's error are re-raised as they are; cancellation is never caught.

    Args:
        fn: Makes one attempt (a fresh coroutine each call).
        max_attempts: Attempts in total, at least 1.
        base_delay / max_delay: Backoff of the first retry / cap of any backoff, in seconds.
        jitter: Full jitter (uniform in ``[0, backoff]``), spreading retries of many callers.
        on_retry: Called as ``on_retry(attempt, error, delay)`` before each wait (may be async).
        sleep / rng: Injectable for tests.
    """
    if max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")
    attempt = 1
    while True:
        try:
            return await fn()
        except Exception as exc:
            if attempt >= max_attempts or not is_retryable(exc):
                raise
            delay = backoff_delay(attempt, base_delay=base_delay, max_delay=max_delay,
                                  jitter=jitter, rng=rng)
            wait = retry_after(exc)
            if wait is not None:
                delay = max(delay, wait)
            if on_retry is not None:
                outcome = on_retry(attempt, exc, delay)
                if inspect.isawaitable(outcome):
                    await outcome
            await sleep(delay)
            attempt += 1
