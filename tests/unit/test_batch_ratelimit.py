"""Per-model rate limiting of batch calls: token buckets, Retry-After pauses, AIMD concurrency."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from aiotools import VirtualClock
from hypothesis import given, settings
from hypothesis import strategies as st

from rowforge.server.batch.ratelimit import (
    AdaptiveConcurrency,
    Clock,
    Limiters,
    ModelLimiter,
    TokenBucket,
)
from rowforge.server.providers import ModelSpec


class FakeTime:
    """A clock that only moves when someone sleeps on it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(seconds, 0.0)
        await asyncio.sleep(0)


def spec(rpm: int = 0, tpm: int = 0) -> ModelSpec:
    return ModelSpec(id="m", route="openai/m", rpm=rpm, tpm=tpm)


# --- token buckets -------------------------------------------------------------------------

async def test_bucket_allows_a_burst_then_the_refill_rate() -> None:
    t = FakeTime()
    bucket = TokenBucket(600, send_lag_s=0, clock=t.clock, sleep=t.sleep)  # 10/s, 10 s = 100
    assert bucket.capacity == 100
    for _ in range(100):
        await bucket.take(1)
    assert t.now == 1000.0  # the burst did not wait
    await bucket.take(1)
    assert t.now == pytest.approx(1000.1)
    for _ in range(10):
        await bucket.take(1)
    assert t.now == pytest.approx(1001.1)


async def test_small_limits_still_hold_one_unit() -> None:
    t = FakeTime()
    bucket = TokenBucket(1, send_lag_s=0, clock=t.clock, sleep=t.sleep)  # one a minute
    assert bucket.capacity == 1
    await bucket.take(1)
    await bucket.take(1)
    assert t.now == pytest.approx(1060.0)


async def test_a_take_larger_than_the_bucket_waits_for_a_full_bucket_and_goes_into_debt() -> None:
    t = FakeTime()
    bucket = TokenBucket(60, send_lag_s=0, clock=t.clock, sleep=t.sleep)  # 1/s, holds 10
    await bucket.take(5)
    await bucket.take(25)  # waits until full (5 s), then owes 15
    assert t.now == pytest.approx(1005.0)
    assert bucket.level == pytest.approx(-15.0)
    await bucket.take(1)
    assert t.now == pytest.approx(1021.0)


async def test_adjust_corrects_an_estimate_both_ways() -> None:
    t = FakeTime()
    bucket = TokenBucket(600, send_lag_s=0, clock=t.clock, sleep=t.sleep)
    await bucket.take(50)
    bucket.adjust(-30)  # used 30 fewer than estimated: given back
    assert bucket.level == pytest.approx(80.0)
    bucket.adjust(500)  # a huge underestimate: debt bounded by one bucket
    assert bucket.level == pytest.approx(-100.0)
    bucket.adjust(-10_000)
    assert bucket.level == pytest.approx(100.0)  # never above capacity


async def test_bucket_takers_are_served_in_order() -> None:
    t = FakeTime()
    bucket = TokenBucket(60, send_lag_s=0, clock=t.clock, sleep=t.sleep)
    await bucket.take(10)
    order: list[int] = []

    async def taker(i: int) -> None:
        await bucket.take(1)
        order.append(i)

    await asyncio.gather(*(taker(i) for i in range(5)))
    assert order == [0, 1, 2, 3, 4]
    assert t.now == pytest.approx(1005.0)


def test_bucket_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        TokenBucket(0)
    with pytest.raises(ValueError):
        TokenBucket(10, burst_s=0)
    with pytest.raises(ValueError):
        TokenBucket(10, send_lag_s=-1)


async def test_a_bucket_keeps_the_send_lag_back_from_its_burst() -> None:
    t = FakeTime()
    bucket = TokenBucket(300, clock=t.clock, sleep=t.sleep)  # 5/s, 10 s = 50, 2 s kept back
    assert (bucket.capacity, bucket.burst) == (50, 40)
    for _ in range(40):
        await bucket.take(1)
    assert t.now == 1000.0
    await bucket.take(1)
    assert t.now == pytest.approx(1000.2)
    assert TokenBucket(1).burst == 1  # never below one unit


# --- adaptive concurrency ------------------------------------------------------------------

async def test_concurrency_halves_once_per_epoch_and_grows_back() -> None:
    limit = AdaptiveConcurrency(8)
    epochs = [await limit.acquire() for _ in range(8)]
    assert limit.in_flight == 8
    for e in epochs:  # a burst of 429s from calls already in flight counts once
        limit.on_throttle(e)
        limit.release()
    assert (limit.limit, limit.in_flight) == (4, 0)
    fresh = await limit.acquire()  # a call started after the decrease may decrease again
    assert fresh == limit.epoch == 1
    limit.on_throttle(fresh)
    limit.release()
    assert limit.limit == 2
    for _ in range(2):  # +1 after `limit` successes in a row
        limit.on_success()
    assert limit.limit == 3
    for _ in range(3 + 4 + 5 + 6 + 7):
        limit.on_success()
    assert limit.limit == 8
    for _ in range(100):  # never above the maximum
        limit.on_success()
    assert limit.limit == 8


async def test_concurrency_never_below_one() -> None:
    limit = AdaptiveConcurrency(4)
    for _ in range(10):
        limit.on_throttle(limit.epoch)
    assert limit.limit == 1


async def test_waiters_get_slots_in_order_when_released() -> None:
    limit = AdaptiveConcurrency(2)
    await limit.acquire()
    await limit.acquire()
    got: list[int] = []

    async def waiter(i: int) -> None:
        await limit.acquire()
        got.append(i)

    tasks = [asyncio.create_task(waiter(i)) for i in range(3)]
    await asyncio.sleep(0)
    assert got == []
    limit.release()
    await asyncio.sleep(0)
    assert got == [0]
    limit.release()
    limit.release()
    await asyncio.gather(*tasks)
    assert got == [0, 1, 2] and limit.in_flight == 2  # each release handed its slot on


async def test_a_cancelled_waiter_gives_its_slot_back() -> None:
    limit = AdaptiveConcurrency(1)
    await limit.acquire()
    waiting = asyncio.create_task(limit.acquire())
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    limit.release()
    assert limit.in_flight == 0
    await asyncio.wait_for(limit.acquire(), 1)  # nothing leaked
    # cancelled just as the slot was handed over: the slot is released, not lost
    handed = asyncio.create_task(limit.acquire())
    await asyncio.sleep(0)
    limit.release()  # hands the slot to `handed`
    handed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await handed
    assert limit.in_flight == 0


# --- the model limiter ---------------------------------------------------------------------

async def test_retry_after_pauses_every_call_to_the_model() -> None:
    t = FakeTime()
    limiter = ModelLimiter(spec(), 4, clock=t.clock, sleep=t.sleep)
    permit = await limiter.acquire(0)
    limiter.release(permit, throttled=True, retry_after=2.5)
    assert limiter.concurrency.limit == 2
    before = t.now
    permit = await limiter.acquire(0)
    assert t.now - before == pytest.approx(2.5)
    limiter.release(permit, succeeded=True)
    # a later, shorter Retry-After never shortens a pause in force
    limiter.pause(10)
    limiter.pause(1)
    assert limiter.paused_until == pytest.approx(t.now + 10)


async def test_rpm_and_tpm_buckets_gate_calls_and_learn_real_usage() -> None:
    t = FakeTime()
    limiter = ModelLimiter(spec(rpm=60, tpm=600), 64, clock=t.clock, sleep=t.sleep,
                           send_lag_s=0)
    assert limiter.requests is not None and limiter.tokens is not None
    for _ in range(10):  # 10 requests fit the request bucket
        limiter.release(await limiter.acquire(10), used_tokens=10, succeeded=True)
    assert t.now == 1000.0
    limiter.release(await limiter.acquire(10), used_tokens=10, succeeded=True)
    assert t.now == pytest.approx(1001.0)  # the 11th waited a second
    # an overestimate is given back after the call
    permit = await limiter.acquire(90)
    level = limiter.tokens.level
    limiter.release(permit, used_tokens=20)
    assert limiter.tokens.level == pytest.approx(level + 70)


async def test_unlimited_models_have_no_buckets() -> None:
    limiter = ModelLimiter(spec(), 4)
    assert limiter.requests is None and limiter.tokens is None
    permits = [await limiter.acquire(10**9) for _ in range(4)]
    assert limiter.concurrency.in_flight == 4
    for p in permits:
        limiter.release(p)


async def test_limiters_are_per_model_and_follow_changed_limits() -> None:
    limiters = Limiters(8)
    first = limiters.for_model(spec(rpm=10))
    assert limiters.for_model(spec(rpm=10)) is first
    assert limiters.for_model(spec(rpm=20)) is not first
    other = limiters.for_model(ModelSpec(id="other", route="openai/o"))
    assert other is not first and other.concurrency.maximum == 8


# --- properties under a virtual clock ------------------------------------------------------
# aiotools' VirtualClock jumps the event loop's time to the next timer whenever every task is
# waiting, so many concurrent takers run against exact time, instantly.

Events = list[tuple[float, float]]  # (time, units: + granted, - given back), in order


def assert_window_bound(events: Events, burst: float, rate: float) -> None:
    """Over any run of consecutive events from t_i to t_j: units <= burst + rate * (t_j - t_i)."""
    for i in range(len(events)):
        total = 0.0
        for j in range(i, len(events)):
            total += events[j][1]
            span = events[j][0] - events[i][0]
            assert total <= burst + rate * span + 1e-6, (i, j, total, span)


def run_virtual(main: Callable[[Clock], Awaitable[None]]) -> None:
    async def virtual() -> None:
        loop = asyncio.get_running_loop()
        with VirtualClock().patch_loop():
            await main(loop.time)

    asyncio.run(virtual())


takers = st.lists(st.tuples(st.floats(0, 30), st.floats(0.01, 1), st.floats(0, 5),
                            st.floats(0, 1)), min_size=1, max_size=60)


@settings(max_examples=150, deadline=None)
@given(per_minute=st.floats(1, 6000), burst_s=st.floats(0.5, 20), lag=st.floats(0, 0.5),
       takers=takers)
def test_bucket_never_grants_more_than_burst_plus_rate_times_window(
        per_minute: float, burst_s: float, lag: float,
        takers: list[tuple[float, float, float, float]]) -> None:
    """Concurrent takers arrive at random times, take a random share of the burst, and some give
    part of it back later (a token estimate corrected by :meth:`TokenBucket.adjust`)."""
    events: Events = []
    bucket: TokenBucket | None = None

    async def taker(clock: Clock, start: float, share: float, hold: float,
                    giveback: float) -> None:
        assert bucket is not None
        await asyncio.sleep(start)
        amount = max(1.0, share * bucket.burst)
        await bucket.take(amount)
        events.append((clock(), amount))
        if giveback:
            await asyncio.sleep(hold)
            bucket.adjust(-giveback * amount)
            events.append((clock(), -giveback * amount))

    async def main(clock: Clock) -> None:
        nonlocal bucket
        bucket = TokenBucket(per_minute, burst_s=burst_s, send_lag_s=lag * burst_s,
                             clock=clock)
        await asyncio.gather(*(taker(clock, *t) for t in takers))

    run_virtual(main)
    assert bucket is not None
    assert sum(1 for _, units in events if units > 0) == len(takers)
    assert_window_bound(events, bucket.burst, bucket.rate)


@settings(max_examples=100, deadline=None)
@given(rpm=st.integers(6, 3000), slots=st.integers(1, 8),
       calls=st.lists(st.tuples(st.sampled_from("ab"), st.floats(0, 10), st.floats(0, 20)),
                      min_size=1, max_size=60))
def test_calls_start_within_the_limit_when_slots_are_scarce(
        rpm: int, slots: int, calls: list[tuple[str, float, float]]) -> None:
    """Two models share a few call slots; model a is rate limited, b is not and holds slots
    for long calls. Model a's calls *start* (hold a slot) within its limit, whatever the wait
    for a slot was, and never more calls run than there are slots."""
    starts: Events = []
    running = 0
    most = 0

    async def main(clock: Clock) -> None:
        shared = asyncio.Semaphore(slots)
        limited = ModelLimiter(spec(rpm=rpm), 64, clock=clock)
        free = ModelLimiter(ModelSpec(id="b", route="openai/b"), 64, clock=clock)

        async def call(model: str, start: float, duration: float) -> None:
            nonlocal running, most
            await asyncio.sleep(start)
            limiter = limited if model == "a" else free
            permit = await limiter.acquire(0, slots=shared)
            running += 1
            most = max(most, running)
            if model == "a":
                starts.append((clock(), 1.0))
            await asyncio.sleep(duration)
            running -= 1
            limiter.release(permit, succeeded=True)

        await asyncio.gather(*(call(*c) for c in calls))
        assert limited.requests is not None
        assert_window_bound(starts, limited.requests.burst, limited.requests.rate)

    run_virtual(main)
    assert most <= slots and running == 0
