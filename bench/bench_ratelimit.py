"""The batch rate limiter's bucket against aiolimiter (a well-kept asyncio leaky bucket).

Measures the cost of one grant that does not wait (the common case: a bucket with room) and of
a contended run (``--takers`` concurrent takers through a bucket refilling fast enough that the
run takes ~0.5 s of real time), for our :class:`TokenBucket` (``take``, and the
``ready``/``charge`` pair the worker uses to charge only once a call slot is held) and
``aiolimiter.AsyncLimiter.acquire``. Prints microseconds per grant and the ratio to ours.

Run: ``.venv/bin/python bench/bench_ratelimit.py [--n 200000] [--takers 2000] [--runs 5]``
(aiolimiter is optional: ``pip install aiolimiter``; without it only ours is measured).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from _machine import print_machine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rowforge.server.batch.ratelimit import TokenBucket

try:
    from aiolimiter import AsyncLimiter
except ImportError:  # optional peer
    AsyncLimiter = None


Take = Callable[[], Awaitable[None]]


def ours(per_minute: float, burst_s: float) -> Take:
    bucket = TokenBucket(per_minute, burst_s=burst_s, send_lag_s=0)
    return lambda: bucket.take(1)


def ours_ready_charge(per_minute: float, burst_s: float) -> Take:
    bucket = TokenBucket(per_minute, burst_s=burst_s, send_lag_s=0)

    async def take() -> None:
        async with bucket.ready(1):
            bucket.charge(1)

    return take


def peer(per_minute: float, burst_s: float) -> Take:
    assert AsyncLimiter is not None
    limiter = AsyncLimiter(per_minute / 60.0 * burst_s, burst_s)
    return limiter.acquire


async def uncontended(make: Callable[[float, float], Take], n: int) -> float:
    take = make(1e12, 10.0)  # never waits
    start = time.perf_counter()
    for _ in range(n):
        await take()
    return (time.perf_counter() - start) / n * 1e6


async def contended(make: Callable[[float, float], Take], takers: int) -> float:
    # a burst of 10% of the takers, the rest refilled over ~0.5 s
    per_s = takers * 0.9 / 0.5
    take = make(per_s * 60.0, takers * 0.1 / per_s)
    start = time.perf_counter()
    await asyncio.gather(*(take() for _ in range(takers)))
    return (time.perf_counter() - start - 0.5) / takers * 1e6  # overhead beyond the refill


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--takers", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print_machine("aiolimiter")
    variants = {"TokenBucket.take": ours, "TokenBucket.ready+charge": ours_ready_charge}
    if AsyncLimiter is not None:
        variants["aiolimiter.acquire"] = peer
    results: dict[str, tuple[float, float]] = {}
    for name, make in variants.items():
        free = statistics.median(asyncio.run(uncontended(make, args.n))
                                 for _ in range(args.runs))
        busy = statistics.median(asyncio.run(contended(make, args.takers))
                                 for _ in range(args.runs))
        results[name] = (free, busy)
    base_free, base_busy = results["TokenBucket.take"]
    print(f"{'variant':26} {'us/grant (room)':>16} {'ratio':>6} "
          f"{'us/grant (contended)':>21} {'ratio':>6}   median of {args.runs} runs")
    for name, (free, busy) in results.items():
        print(f"{name:26} {free:16.2f} {free / base_free:6.2f} {busy:21.2f} "
              f"{busy / base_busy:6.2f}")


if __name__ == "__main__":
    main()
