"""The worker's private mount namespace (root only): a tmpfs for cells, a path to Python.

* Cell directories live on a size-capped tmpfs mounted over the worker's slot directory:
  creating and removing them is cheap, and the cap bounds the disk a cell can fill
  (``RLIMIT_FSIZE`` only bounds each file).
* ``/proc`` is remounted so that cells see only their own processes.
* Development machines often have the interpreter under a 0700 home (``/root/.pyenv``). The
  worker then covers each blocking directory with an empty tmpfs and bind-mounts the needed
  trees back, read-only. Nothing else becomes reachable.

Only the worker and its cells see these mounts; the server's filesystem is untouched, and they
vanish with the worker.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Mapping, Sequence
from functools import cache

CLONE_NEWNS = 0x00020000
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18


@cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _enc(text: str | None) -> bytes | None:
    return text.encode() if text is not None else None


def _mount(source: str | None, target: str, fstype: str | None, flags: int,
           data: str | None = None) -> None:
    enc = _enc
    _check(_libc().mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags),
                         enc(data)), f"mount {target}")


_private = False


def enter_private_namespace() -> None:
    """Move this process into its own mount namespace (once); needs CAP_SYS_ADMIN."""
    global _private
    if _private:
        return
    _check(_libc().unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    # Keep our mounts from propagating back to the server's namespace.
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    _private = True


def mount_tmpfs(path: str, *, size_mb: int, mode: int) -> None:
    """Mount a fresh tmpfs of at most ``size_mb`` on ``path`` (in the private namespace)."""
    enter_private_namespace()
    _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV,
           f"mode={mode:o},size={size_mb}m,nr_inodes={max(1024, size_mb * 64)}")


def cover(path: str, *, mode: int) -> None:
    """Mount an empty tmpfs over ``path`` (in the private namespace): what was there is
    hidden from this process and its children; the caller builds what they need inside."""
    enter_private_namespace()
    _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, f"mode={mode:o},size=1m")


def hide_other_processes() -> None:
    """Remount ``/proc`` with ``hidepid=2``: cells see only their own processes there.

    Without it a cell can list every process of the machine and read their command lines.
    (Refused in containers whose ``/proc`` has masked entries; the caller treats it as
    optional.)
    """
    enter_private_namespace()
    _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=2")


def expose(blockers: Mapping[str, Sequence[str]]) -> None:
    """Cover each blocking directory with a tmpfs holding read-only binds of its trees.

    Args:
        blockers: blocking directory -> the paths beneath it that must stay reachable.
    """
    if any(blocker in ("", "/") for blocker in blockers):
        raise OSError("refusing to cover the root directory")
    enter_private_namespace()
    held = {path: os.open(path, os.O_PATH | os.O_CLOEXEC)
            for paths in blockers.values() for path in paths}
    try:
        for blocker, paths in blockers.items():
            _mount("tmpfs", blocker, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=64k")
            for path in paths:
                os.makedirs(path, mode=0o755, exist_ok=True)
                _mount(f"/proc/self/fd/{held[path]}", path, None, MS_BIND | MS_REC)
                _mount(None, path, None, MS_BIND | MS_REMOUNT | MS_RDONLY)
    finally:
        for fd in held.values():
            os.close(fd)
