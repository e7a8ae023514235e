"""Which paths a cell may read or write: the allow-list behind the Landlock ruleset."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator, Sequence

#: System trees a Python cell needs read (and exec) access to: libraries, certificates, DNS
#: and locale settings, fonts, ``/proc``/``/sys`` for CPU counts.
SYSTEM_READ_ROOTS: tuple[str, ...] = (
    "/usr", "/lib", "/lib32", "/lib64", "/libx32", "/bin", "/sbin", "/etc", "/proc", "/sys",
)

#: Device files a cell may open read-write.
DEVICE_FILES: tuple[str, ...] = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random",
                                 "/dev/urandom")


def python_read_roots() -> list[str]:
    """The interpreter's prefixes and every existing ``sys.path`` entry."""
    roots = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]
    roots += [p for p in sys.path if p and os.path.exists(p)]
    return roots


def _real(path: str) -> str:
    return os.path.realpath(path)


def _inside(path: str, root: str) -> bool:
    """Whether ``path`` is ``root`` or beneath it (both real, absolute)."""
    return path == root or path.startswith(root.rstrip("/") + "/")


def readable_roots(roots: Iterable[str], forbidden: Sequence[str]) -> list[str]:
    """The directories and files to allow reading: ``roots`` minus the ``forbidden`` trees.

    Landlock can only allow, never carve out an exception, so a root that contains a
    forbidden path is replaced by its entries, recursively, skipping the forbidden branch.
    Paths are resolved first, so a symlink cannot smuggle a forbidden tree back in.
    """
    banned = [_real(p) for p in forbidden]
    out: dict[str, None] = {}
    seen: set[str] = set()

    def visit(path: str) -> Iterator[str]:
        real = _real(path)
        if real in seen or not os.path.exists(real):
            return
        seen.add(real)
        if any(_inside(real, b) for b in banned):
            return
        if not any(_inside(b, real) for b in banned):
            yield real
            return
        try:
            entries = sorted(os.scandir(real), key=lambda e: e.name)
        except OSError:
            return
        for entry in entries:
            yield from visit(entry.path)

    for root in roots:
        for path in visit(root):
            out.setdefault(path)
    # Drop paths already covered by an allowed ancestor: fewer rules, same effect.
    kept: list[str] = []
    for path in sorted(out, key=len):
        if not any(_inside(path, k) for k in kept):
            kept.append(path)
    return sorted(kept)
