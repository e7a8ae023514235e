"""Python-column sandbox: what running a cell in isolation costs, one run.

A trivial cell (``row["y"] = row["x"] + 1``) through ``SandboxPool`` (fork per cell from a
pre-warmed worker, rlimits, uid drop when root, Landlock when available), next to two
baselines: ``exec`` in the server process (no isolation at all: the floor) and a fresh
``python -I -c`` per cell (isolation without a warm worker: the naive design).

Prints: pool start-up time; sequential latency (mean, p50, p99) of the pool and of both
baselines; pool throughput with all workers busy; a cell that imports numpy (preloaded).

Run: ``.venv/bin/python bench/bench_sandbox.py [--cells 300] [--workers 2]``
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable

from _machine import print_machine

from rowforge.server.sandbox import SandboxPool

CODE = 'row["y"] = row["x"] + 1'


def summary(name: str, seconds: list[float]) -> str:
    ms = sorted(s * 1000 for s in seconds)
    p99 = ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))]
    return (f"{name:<34} mean {statistics.fmean(ms):7.3f} ms   p50 {statistics.median(ms):7.3f}"
            f" ms   p99 {p99:7.3f} ms   (n={len(ms)})")


async def timed(n: int, call: Callable[[], Awaitable[object]]) -> list[float]:
    out = []
    for _ in range(n):
        started = time.perf_counter()
        await call()
        out.append(time.perf_counter() - started)
    return out


async def fresh_interpreter() -> None:
    script = f"row = {{'x': 1}}\n{CODE}\nprint(row['y'])"
    proc = await asyncio.create_subprocess_exec(sys.executable, "-I", "-c", script,
                                                stdout=asyncio.subprocess.PIPE)
    await proc.communicate()


async def in_process() -> None:
    row = {"x": 1}
    exec(compile(CODE, "<python column>", "exec"), {"row": row})


async def main(cells: int, workers: int) -> None:
    print_machine("msgpack", "numpy")
    started = time.perf_counter()
    async with SandboxPool(workers=workers) as pool:
        print(f"pool start-up ({workers} workers, preload numpy + PIL): "
              f"{(time.perf_counter() - started) * 1000:.0f} ms; isolation: {pool.isolation}")
        await timed(20, lambda: pool.run(CODE, {"x": 1}, "y"))  # warm-up
        pool_times = await timed(cells, lambda: pool.run(CODE, {"x": 1}, "y"))
        numpy_times = await timed(max(20, cells // 5), lambda: pool.run(
            "import numpy as np\nrow['y'] = float(np.arange(row['x'] + 9).sum())", {"x": 1}, "y"))
        started = time.perf_counter()
        await asyncio.gather(*(pool.run(CODE, {"x": i}, "y") for i in range(cells)))
        throughput = cells / (time.perf_counter() - started)
    exec_times = await timed(cells, in_process)
    fresh_times = await timed(max(10, cells // 15), fresh_interpreter)
    print(summary("exec() in the server (floor)", exec_times))
    print(summary("SandboxPool.run", pool_times))
    print(summary("SandboxPool.run, numpy cell", numpy_times))
    print(summary("fresh `python -I -c` per cell", fresh_times))
    pool_mean = statistics.fmean(pool_times)
    print(f"\nSandboxPool per-cell overhead: {pool_mean * 1000:.2f} ms "
          f"({statistics.fmean(fresh_times) / pool_mean:.1f}x faster than a fresh interpreter)")
    print(f"SandboxPool throughput, {workers} workers busy: {throughput:.0f} cells/s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=300)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    asyncio.run(main(args.cells, args.workers))
