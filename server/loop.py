"""The server's event loop: uvloop when available, and a frozen start-up heap.

``bench/bench_batch.py`` and ``bench/bench_providers.py`` measured both (see the README's
performance section): uvloop lowers the loop's own CPU per request (sockets, timers,
callbacks), and ``gc.freeze()`` after start-up keeps the hundreds of thousands of objects
that imports create (litellm alone brings ~0.5 M) out of every later full collection.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
LOOPS = ("auto", "uvloop", "asyncio")

log = logging.getLogger("rowforge.server")


def run(main: Coroutine[Any, Any, T], choice: str = "auto") -> T:
    """Run ``main`` on the chosen loop (``auto``: uvloop when installed, else asyncio).

    Raises:
        SystemExit: an unknown choice, or ``uvloop`` asked for but not installed.
    """
    if choice not in LOOPS:
        main.close()
        raise SystemExit(f"event_loop must be one of {', '.join(LOOPS)}, not {choice!r}")
    if choice != "asyncio":
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                main.close()
                raise SystemExit("event_loop = uvloop, but uvloop is not installed "
                                 "(pip install uvloop)") from None
        else:
            return uvloop.run(main)
    return asyncio.run(main)


def loop_name() -> str:
    """``uvloop`` or ``asyncio``: what the running loop is."""
    return "uvloop" if type(asyncio.get_running_loop()).__module__.startswith("uvloop") \
        else "asyncio"


def freeze_startup_heap() -> int:
    """Collect, then freeze what survived start-up; returns how many objects were frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
