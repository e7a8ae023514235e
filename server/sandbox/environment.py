"""The environment sandbox workers start with: built from nothing, never copied."""

from __future__ import annotations

import os
import sys

#: Native thread pools would start threads at import (unsafe to fork) and multiply the
#: address space a cell reserves; one thread each keeps cells small and predictable.
_SINGLE_THREADED = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")


def scrubbed_environment(home: str) -> dict[str, str]:
    """A fresh environment for a worker: no server secrets, no database URL, nothing inherited.

    Args:
        home: The worker's private directory (each cell then gets its own beneath it).
    """
    path = os.pathsep.join(dict.fromkeys(
        [os.path.dirname(sys.executable), "/usr/local/bin", "/usr/bin", "/bin"]))
    env = {
        "PATH": path,
        "LANG": "C.UTF-8",
        "HOME": home,
        "TMPDIR": home,
        "PYTHONDONTWRITEBYTECODE": "1",
        # glibc reserves 64 MB of address space per malloc arena and thread; cap the arenas
        # so RLIMIT_AS measures what a cell uses, not how many threads it started.
        "MALLOC_ARENA_MAX": "2",
        "MPLBACKEND": "Agg",
    }
    env.update(dict.fromkeys(_SINGLE_THREADED, "1"))
    return env
