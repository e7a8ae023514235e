"""Giving memory back to the system after large requests.

A 30 MB request leaves glibc's heap grown by its buffers (gRPC's, protobuf's, ours) after
they are freed: the process's RSS stays at its high-water mark forever (98 MB at start,
2.65 GB after three hostile fuzz runs, seen in the red-team pass). ``malloc_trim`` returns
the free pages; :func:`trim_periodically` collects reference cycles (an exception's traceback
can hold a large request until a full collection) and calls it when RSS has grown since the
last trim. :func:`configure` also fixes glibc's mmap threshold, so that buffers above 4 MiB
are mapped on their own and unmapped when freed instead of fragmenting the heap, and raises
its trim threshold: with the default (128 KiB once the mmap threshold is fixed) every freed
1 MiB transfer buffer at the top of the heap was handed back to the kernel and faulted in
(zeroed) again for the next chunk, which cost uploads and downloads half their server CPU
(``bench/bench_files.py``); the periodic trim returns that memory after a burst instead.
It also caps glibc's arenas (:data:`ARENA_MAX`).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
import os
from functools import cache

log = logging.getLogger("rowforge.server")
#: RSS growth since the last trim (bytes) that makes the next tick trim.
TRIM_GROWTH_BYTES = 16 * 1024 * 1024


@cache
def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (has ``malloc_trim``), else None (musl, macOS)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
#: glibc heaps ("arenas") threads allocate from: glibc's default, 8 per core, let each
#: worker thread (tantivy's writers, hnswlib's builders, SQLite readers) grow and keep a heap
#: of its own; with 2 a 20-table knowledge workload's peak RSS fell ~10% (494 vs 543 MiB,
#: bench/bench_index_memory.py), searches as fast. ``MALLOC_ARENA_MAX`` overrides it.
ARENA_MAX = 2
MMAP_THRESHOLD_BYTES = 4 * 1024 * 1024
#: Free memory at the top of the heap that ``free`` keeps for the next allocations (the
#: periodic :func:`trim` returns it when the process stays larger).
TRIM_THRESHOLD_BYTES = 32 * 1024 * 1024


def configure() -> bool:
    """Fix glibc's mmap threshold (it otherwise rises to the largest freed block, up to
    32 MiB, and large request buffers then fragment the heap), raise its trim threshold and
    cap its arenas (see the module docstring); False where not glibc."""
    libc = _glibc()
    if libc is None:
        return False
    # glibc fixes its arena limit when the ninth arena would be made: at start-up (a few
    # threads so far) the limit set here still applies.
    if "MALLOC_ARENA_MAX" not in os.environ:
        libc.mallopt(_M_ARENA_MAX, ARENA_MAX)
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
                and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))


def trim() -> bool:
    """Return freed heap memory to the system; False where the C library cannot."""
    libc = _glibc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True


def rss_bytes() -> int:
    """Resident set size of this process (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


async def trim_periodically(interval_s: float) -> None:
    """Every ``interval_s``, trim the heap if RSS grew by TRIM_GROWTH_BYTES since the last
    trim (in a thread: a large heap takes milliseconds)."""
    if _glibc() is None:
        return
    baseline = rss_bytes()
    while True:
        await asyncio.sleep(interval_s)
        now = rss_bytes()
        if now - baseline < TRIM_GROWTH_BYTES:
            baseline = min(baseline, now)
            continue
        # Cycles (an exception, its traceback and the frames holding a large request) wait
        # for a full collection, which start-up's gc.freeze() makes rare: collect first.
        gc.collect()
        await asyncio.to_thread(trim)
        baseline = rss_bytes()
        log.debug("memory trimmed", extra={"rssBeforeMb": now >> 20,
                                          "rssAfterMb": baseline >> 20})
