"""Per-model rate limiting of our own, so a batch stays inside the provider's limits instead of
living on 429s.

Each model gets a :class:`ModelLimiter`: token buckets for requests/min and tokens/min (the
model spec's ``rpm``/``tpm``; 0 = unlimited), a pause honouring ``Retry-After`` (a 429 stops
the whole model until then) and an adaptive concurrency limit (AIMD: halved on a 429, +1 after
a window of successes, up to the configured maximum).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from rowforge.server.providers import ModelSpec

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[Any]]


BURST_S = 10.0
"""A bucket holds this many seconds of its limit: a whole minute's quota at once would be
refused by providers that enforce their per-minute limits in shorter slices."""


class TokenBucket:
    """``per_minute`` units a minute, refilled continuously, holding ``burst_s`` seconds' worth
    (at least one unit).

    Takers queue in arrival order. A take larger than the bucket waits for a full bucket (so it
    is possible at all); :meth:`adjust` may leave the level negative (an underestimate is
    paid back by later takers).
    """

    def __init__(self, per_minute: float, *, burst_s: float = BURST_S,
                 clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep) -> None:
        if per_minute <= 0 or burst_s <= 0:
            raise ValueError("per_minute and burst_s must be positive")
        self.rate = float(per_minute) / 60.0
        self.capacity = max(1.0, self.rate * burst_s)
        self.level = self.capacity
        self._clock = clock
        self._sleep = sleep
        self._stamp = clock()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self.level = min(self.capacity, self.level + (now - self._stamp) * self.rate)
        self._stamp = now

    async def take(self, amount: float) -> None:
        """Wait until ``amount`` units are available, then take them."""
        need = min(float(amount), self.capacity)
        async with self._lock:
            while True:
                self._refill()
                if self.level >= need - 1e-9:  # float rounding must not spin
                    self.level -= amount
                    return
                await self._sleep((need - self.level) / self.rate)

    def adjust(self, delta: float) -> None:
        """Take ``delta`` more units (or give ``-delta`` back) without waiting."""
        self._refill()
        self.level = max(-self.capacity, min(self.capacity, self.level - delta))


class AdaptiveConcurrency:
    """A semaphore whose size adapts: AIMD between 1 and ``maximum``.

    ``on_throttle`` halves the limit, at most once per *epoch*: only a permit acquired since
    the last decrease can cause the next one, so a burst of 429s from calls that were already
    in flight counts once (as TCP reacts once per window).
    """

    def __init__(self, maximum: int, *, minimum: int = 1) -> None:
        if maximum < 1 or not 1 <= minimum <= maximum:
            raise ValueError("need 1 <= minimum <= maximum")
        self.maximum = maximum
        self.minimum = minimum
        self.limit = maximum
        self.in_flight = 0
        self.epoch = 0
        self._successes = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self) -> int:
        """Wait for a slot; returns the epoch to pass to :meth:`on_throttle`."""
        if self.in_flight < self.limit and not self._waiters:
            self.in_flight += 1
            return self.epoch
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # the slot was handed over just as we were cancelled
            else:
                try:
                    self._waiters.remove(future)
                except ValueError:
                    pass
            raise
        return self.epoch

    def release(self) -> None:
        self.in_flight -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.in_flight < self.limit:
            future = self._waiters.popleft()
            if not future.done():
                self.in_flight += 1
                future.set_result(None)

    def on_success(self) -> None:
        """Additive increase: +1 after ``limit`` successes in a row."""
        self._successes += 1
        if self._successes >= self.limit:
            self._successes = 0
            if self.limit < self.maximum:
                self.limit += 1
                self._wake()

    def on_throttle(self, epoch: int) -> None:
        """Multiplicative decrease, once per epoch."""
        if epoch != self.epoch:
            return
        self.epoch += 1
        self._successes = 0
        self.limit = max(self.minimum, self.limit // 2)


@dataclass
class Permit:
    """Leave to make one call; hand it back with :meth:`ModelLimiter.release`."""

    epoch: int
    estimated_tokens: int


class ModelLimiter:
    """Everything that gates calls to one model (see the module docstring)."""

    def __init__(self, spec: ModelSpec, max_concurrency: int, *, clock: Clock = time.monotonic,
                 sleep: Sleep = asyncio.sleep) -> None:
        self.model = spec.id
        self.rpm = spec.rpm
        self.tpm = spec.tpm
        self._clock = clock
        self._sleep = sleep
        self.requests = TokenBucket(spec.rpm, clock=clock, sleep=sleep) if spec.rpm else None
        self.tokens = TokenBucket(spec.tpm, clock=clock, sleep=sleep) if spec.tpm else None
        self.concurrency = AdaptiveConcurrency(max_concurrency)
        self.paused_until = 0.0

    def pause(self, seconds: float) -> None:
        """Stop every call to the model for ``seconds`` (a provider's ``Retry-After``)."""
        self.paused_until = max(self.paused_until, self._clock() + max(seconds, 0.0))

    async def _wait_pause(self) -> None:
        while (left := self.paused_until - self._clock()) > 0:
            await self._sleep(left)

    async def acquire(self, estimated_tokens: int) -> Permit:
        """Wait for a concurrency slot, the end of any pause, and room in both buckets."""
        epoch = await self.concurrency.acquire()
        try:
            await self._wait_pause()
            if self.requests is not None:
                await self.requests.take(1)
            if self.tokens is not None:
                await self.tokens.take(estimated_tokens)
            await self._wait_pause()  # a 429 may have paused the model while we waited
        except BaseException:
            self.concurrency.release()
            raise
        return Permit(epoch, estimated_tokens)

    def release(self, permit: Permit, *, used_tokens: int | None = None,
                throttled: bool = False, retry_after: float | None = None,
                succeeded: bool = False) -> None:
        """Return a permit: correct the token estimate, and adapt to how the call went."""
        self.concurrency.release()
        if self.tokens is not None and used_tokens is not None:
            self.tokens.adjust(used_tokens - permit.estimated_tokens)
        if throttled:
            self.concurrency.on_throttle(permit.epoch)
            if retry_after is not None:
                self.pause(retry_after)
        elif succeeded:
            self.concurrency.on_success()


class Limiters:
    """One :class:`ModelLimiter` per model id (rebuilt if the model's limits change)."""

    def __init__(self, max_concurrency: int, *, clock: Clock = time.monotonic,
                 sleep: Sleep = asyncio.sleep) -> None:
        self.max_concurrency = max_concurrency
        self._clock = clock
        self._sleep = sleep
        self._by_model: dict[str, ModelLimiter] = {}

    def for_model(self, spec: ModelSpec) -> ModelLimiter:
        limiter = self._by_model.get(spec.id)
        if limiter is None or (limiter.rpm, limiter.tpm) != (spec.rpm, spec.tpm):
            limiter = ModelLimiter(spec, self.max_concurrency, clock=self._clock,
                                   sleep=self._sleep)
            self._by_model[spec.id] = limiter
        return limiter
