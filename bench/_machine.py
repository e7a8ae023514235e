"""Machine details for benchmark output: CPU model, cores, load, Python and library versions."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def describe(*packages: str) -> str:
    """Return a few lines naming the CPU, core count, load, Python and ``packages`` versions."""
    from rowforge import fastcore

    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    versions = ", ".join(f"{p} {_version(p)}" for p in ("Cython", *packages))
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return "\n".join(
        [
            f"CPU: {_cpu_model()} ({os.cpu_count()} logical cores, {usable} usable; "
            f"load avg {load})",
            f"Python {platform.python_version()} ({platform.python_implementation()}) "
            f"on {platform.system()} {platform.release()}",
            f"{versions}; rowforge.fastcore compiled: {fastcore.COMPILED}",
        ]
    )


def print_machine(*packages: str) -> None:
    """Print :func:`describe` followed by a blank line."""
    print(describe(*packages))
    print(file=sys.stdout)


if __name__ == "__main__":
    print_machine("numpy", "hnswlib")


def cpu_seconds(pid: int, tid: int | None = None) -> float:
    """User + system CPU time of a process, or of one of its threads (from /proc)."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    with open(path, encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
