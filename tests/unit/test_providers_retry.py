"""with_retries: which errors are retried, backoff with jitter, Retry-After, cancellation."""

from __future__ import annotations

import asyncio

import pytest

from rowforge.server.errors import InvalidArgument, NotFound, ResourceExhausted, Unavailable
from rowforge.server.providers import backoff_delay, with_retries


class FakeClock:
    """Records sleeps instead of sleeping."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)


def failing(*errors: Exception, result: str = "ok"):  # type: ignore[no-untyped-def]
    queue = list(errors)
    calls: list[int] = []

    async def attempt() -> str:
        calls.append(1)
        if queue:
            raise queue.pop(0)
        return result

    attempt.calls = calls  # type: ignore[attr-defined]
    return attempt


async def test_retries_retryable_errors_with_exponential_backoff() -> None:
    clock = FakeClock()
    fn = failing(Unavailable("down"), Unavailable("down"), Unavailable("down"))
    assert await with_retries(fn, base_delay=0.5, jitter=False, sleep=clock.sleep) == "ok"
    assert clock.sleeps == [0.5, 1.0, 2.0]
    assert len(fn.calls) == 4


async def test_full_jitter_stays_within_the_backoff() -> None:
    clock = FakeClock()
    values = iter([0.0, 0.5, 1.0])
    fn = failing(Unavailable("x"), Unavailable("x"), Unavailable("x"))
    await with_retries(fn, base_delay=1.0, sleep=clock.sleep, rng=lambda: next(values))
    assert clock.sleeps == [0.0, 1.0, 4.0]


async def test_never_sooner_than_retry_after() -> None:
    clock = FakeClock()
    fn = failing(ResourceExhausted("slow", retry_after=5.0), Unavailable("x", retry_after=0.1))
    await with_retries(fn, base_delay=0.5, jitter=False, sleep=clock.sleep)
    assert clock.sleeps == [5.0, 1.0]


async def test_retry_after_may_exceed_max_delay_but_backoff_may_not() -> None:
    clock = FakeClock()
    fn = failing(Unavailable("x"), Unavailable("x"), ResourceExhausted("q", retry_after=60))
    await with_retries(fn, base_delay=10, max_delay=12, jitter=False, sleep=clock.sleep)
    assert clock.sleeps == [10, 12, 60]


async def test_gives_up_after_max_attempts_with_the_last_error() -> None:
    clock = FakeClock()
    last = Unavailable("third")
    fn = failing(Unavailable("first"), Unavailable("second"), last, Unavailable("never"))
    with pytest.raises(Unavailable) as info:
        await with_retries(fn, max_attempts=3, base_delay=0.01, sleep=clock.sleep)
    assert info.value is last
    assert len(fn.calls) == 3 and len(clock.sleeps) == 2


@pytest.mark.parametrize("error", [InvalidArgument("bad"), NotFound("gone"), KeyError("bug")])
async def test_non_retryable_errors_are_raised_at_once(error: Exception) -> None:
    clock = FakeClock()
    fn = failing(error)
    with pytest.raises(type(error)):
        await with_retries(fn, sleep=clock.sleep)
    assert len(fn.calls) == 1 and clock.sleeps == []


async def test_on_retry_sync_and_async() -> None:
    seen: list[tuple[int, str, float]] = []

    async def record(attempt: int, exc: BaseException, delay: float) -> None:
        seen.append((attempt, str(exc), delay))

    fn = failing(Unavailable("a"), Unavailable("b"))
    await with_retries(fn, base_delay=0.001, jitter=False, on_retry=record)
    assert seen == [(1, "a", 0.001), (2, "b", 0.002)]
    plain: list[int] = []
    await with_retries(failing(Unavailable("c")), base_delay=0.001,
                       on_retry=lambda n, e, d: plain.append(n))
    assert plain == [1]


async def test_cancellation_during_backoff_propagates() -> None:
    fn = failing(Unavailable("x"), Unavailable("x"))
    task = asyncio.create_task(with_retries(fn, base_delay=10, jitter=False))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(fn.calls) == 1


async def test_real_sleep_is_used_by_default() -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    await with_retries(failing(Unavailable("x", retry_after=0.1)), base_delay=0.001)
    assert loop.time() - start >= 0.1


def test_backoff_delay_and_bad_arguments() -> None:
    assert backoff_delay(1, base_delay=0.5, max_delay=30, jitter=False) == 0.5
    assert backoff_delay(10, base_delay=0.5, max_delay=30, jitter=False) == 30
    assert backoff_delay(3, base_delay=1, max_delay=30, jitter=True, rng=lambda: 0.25) == 1.0
    with pytest.raises(ValueError):
        asyncio.run(with_retries(failing(), max_attempts=0))
