"""Per-model rate limiting of our own, so a batch stays inside the provider's limits instead of
living on 429s.

Each model gets a :class:`ModelLimiter`: token buckets for requests/min and tokens/min (the
model spec's ``rpm``/``tpm``; 0 = unlimited), a pause honouring ``Retry-After`` (a 429 stops
the whole model until then) and an adaptive concurrency limit (AIMD: halved on a 429, +1 after
a window of successes, up to the configured maximum).

The provider counts a call when it *arrives*, not when we grant it, and the two differ: a
burst of calls started together reaches the wire together only after all of their transport
work (litellm spends ~3-6 ms of CPU per call before sending; a burst of 50 was measured
reaching the wire 0.2-0.5 s after its grant, while a lone call later goes out in ~5 ms), so the
calls granted by the refill meanwhile land in the same provider window (51-53 arrivals in a
few ms from a bucket of 50, issue 11). Three rules keep arrivals within the promise:

* the transport is loaded before a permit is asked for (a cold litellm import took seconds,
  and every grant made meanwhile reached the provider in one burst);
* units are charged only once the call holds a global call slot
  (:meth:`ModelLimiter.acquire` with ``slots``), never to a call that then queues for one;
* a bucket grants at most ``rate * (burst_s - send_lag_s)`` at once and keeps
  ``rate * send_lag_s`` back for the grant-to-wire delay, so any window of W seconds at the
  provider sees at most ``rate * (burst_s + W)`` calls while that delay stays under
  ``send_lag_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from rowforge.server.providers import ModelSpec

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[Any]]


BURST_S = 10.0
"""A bucket holds this many seconds of its limit: a whole minute's quota at once would be
refused by providers that enforce their per-minute limits in shorter slices."""

SEND_LAG_S = 2.0
"""Seconds of the limit a bucket keeps back for the delay between a grant and the call's
arrival at the provider (a burst's own transport work; measured 0.2-0.5 s for 50 litellm
calls on a quiet machine, several times that under load)."""


class TokenBucket:
    """``per_minute`` units a minute, refilled continuously, holding ``burst_s`` seconds' worth
    of which ``burst`` (at least one unit) can be granted at once (see the module docstring).

    Takers queue in arrival order. A take larger than the burst waits for a full bucket (so it
    is possible at all); :meth:`adjust` may leave the level negative (an underestimate is
    paid back by later takers). Over any window of ``W`` seconds, the units granted (net of
    :meth:`adjust`) are at most ``burst + rate * W``.
    """

    def __init__(self, per_minute: float, *, burst_s: float = BURST_S,
                 send_lag_s: float = SEND_LAG_S, clock: Clock = time.monotonic,
                 sleep: Sleep = asyncio.sleep) -> None:
        if per_minute <= 0 or burst_s <= 0 or send_lag_s < 0:
            raise ValueError("per_minute and burst_s must be positive, send_lag_s >= 0")
        self.rate = float(per_minute) / 60.0
        self.capacity = max(1.0, self.rate * burst_s)
        self.burst = max(1.0, self.capacity - self.rate * send_lag_s)
        self.level = self.burst
        self._clock = clock
        self._sleep = sleep
        self._stamp = clock()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self.level = min(self.burst, self.level + (now - self._stamp) * self.rate)
        self._stamp = now

    async def take(self, amount: float) -> None:
        """Wait until ``amount`` units are available, then take them."""
        if not self._lock.locked():  # nobody queued: no lock, no context manager
            self._refill()
            if self.level >= min(float(amount), self.burst) - 1e-9:
                self.level -= amount
                return
        async with self.ready(amount):
            self.charge(amount)

    @contextlib.asynccontextmanager
    async def ready(self, amount: float) -> AsyncIterator[None]:
        """Wait (in arrival order) until ``amount`` units are available and hold the bucket:
        nobody else takes until the block ends. Call :meth:`charge` inside to take them."""
        need = min(float(amount), self.burst)
        async with self._lock:
            while True:
                self._refill()
                if self.level >= need - 1e-9:  # float rounding must not spin
                    break
                await self._sleep((need - self.level) / self.rate)
            yield

    def charge(self, amount: float) -> None:
        """Take ``amount`` units now (inside :meth:`ready`)."""
        self._refill()
        self.level -= amount

    def adjust(self, delta: float) -> None:
        """Take ``delta`` more units (or give ``-delta`` back) without waiting."""
        self._refill()
        self.level = max(-self.burst, min(self.burst, self.level - delta))


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
    slots: asyncio.Semaphore | None = None


class ModelLimiter:
    """Everything that gates calls to one model (see the module docstring)."""

    def __init__(self, spec: ModelSpec, max_concurrency: int, *, clock: Clock = time.monotonic,
                 sleep: Sleep = asyncio.sleep, send_lag_s: float = SEND_LAG_S) -> None:
        self.model = spec.id
        self.rpm = spec.rpm
        self.tpm = spec.tpm
        self._clock = clock
        self._sleep = sleep
        def bucket(per_minute: int) -> TokenBucket | None:
            return TokenBucket(per_minute, send_lag_s=send_lag_s, clock=clock,
                               sleep=sleep) if per_minute else None

        self.requests = bucket(spec.rpm)
        self.tokens = bucket(spec.tpm)
        self.concurrency = AdaptiveConcurrency(max_concurrency)
        self.paused_until = 0.0

    def pause(self, seconds: float) -> None:
        """Stop every call to the model for ``seconds`` (a provider's ``Retry-After``)."""
        self.paused_until = max(self.paused_until, self._clock() + max(seconds, 0.0))

    def _paused(self) -> bool:
        return self.paused_until > self._clock()

    async def _wait_pause(self) -> None:
        while (left := self.paused_until - self._clock()) > 0:
            await self._sleep(left)

    async def acquire(self, estimated_tokens: int, *,
                      slots: asyncio.Semaphore | None = None) -> Permit:
        """Wait for a concurrency slot, the end of any pause, room in both buckets and then
        one of ``slots`` (the process's calls in flight, shared by every model): the buckets
        are charged only once the call can start at once. A model waiting for room holds no
        slot, and at most one of its calls holds a slot while the others queue."""
        epoch = await self.concurrency.acquire()
        try:
            while True:
                await self._wait_pause()
                async with contextlib.AsyncExitStack() as held:
                    if self.requests is not None:
                        await held.enter_async_context(self.requests.ready(1))
                    if self.tokens is not None:
                        await held.enter_async_context(self.tokens.ready(estimated_tokens))
                    if self._paused():  # a 429 paused the model while we waited for room
                        continue
                    if slots is not None:
                        await slots.acquire()
                        if self._paused():  # ... or while we waited for a slot
                            slots.release()
                            continue
                    if self.requests is not None:
                        self.requests.charge(1)
                    if self.tokens is not None:
                        self.tokens.charge(estimated_tokens)
                    return Permit(epoch, estimated_tokens, slots)
        except BaseException:
            self.concurrency.release()
            raise

    def release(self, permit: Permit, *, used_tokens: int | None = None,
                throttled: bool = False, retry_after: float | None = None,
                succeeded: bool = False) -> None:
        """Return a permit: correct the token estimate, and adapt to how the call went."""
        if permit.slots is not None:
            permit.slots.release()
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
