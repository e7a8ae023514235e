"""The unprivileged identity cells run as, and checks made under that identity."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pwd
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: nogroup on Debian; every cell runs with this gid and no supplementary groups.
DEFAULT_GID = 65534
#: Worker slot ``i`` runs its cells as uid ``DEFAULT_UID_BASE + i``: one uid per slot keeps
#: concurrent cells from signalling each other or reading each other's files, and lets the
#: worker kill everything a dead predecessor left behind. Chosen below systemd's dynamic-user
#: range (61184-65519) and away from Debian's static allocations; configurable.
DEFAULT_UID_BASE = 60100
#: Where servers of one machine claim their uids (root only: without root cells keep the
#: server's uid). A uid is claimed by an exclusive ``flock`` on ``<uid>.lock``, which the
#: kernel drops when the claiming process dies, so a crash never leaks a claim.
UID_LOCK_DIR = "/run/rowforge/sandbox-uids"
#: How many blocks of uids above the base a server tries before giving up.
UID_BLOCKS = 64


@dataclass
class UidClaim:
    """Uids held for one sandbox pool: no other server on this machine runs cells as them
    while the claim is held, so a worker may kill whatever runs as its uid."""

    uids: list[int]
    _fds: list[int] = field(default_factory=list, repr=False)

    def release(self) -> None:
        """Give the uids back (also happens when the process exits)."""
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()


def claim_uids(base: int, count: int, *, lock_dir: str = UID_LOCK_DIR,
               blocks: int = UID_BLOCKS) -> UidClaim:
    """Claim ``count`` uids at or above ``base`` that no account and no other live server uses.

    Several root servers on one machine (tests, replicas, a second ``rowforge serve``) each
    get their own uids: sharing one would let a starting worker kill another server's cells.
    Raises ``OSError`` when no block of free uids is found.
    """
    os.makedirs(lock_dir, mode=0o700, exist_ok=True)
    for block in range(blocks):
        uids = list(range(base + block * count, base + (block + 1) * count))
        if any(_has_account(uid) for uid in uids):
            continue
        fds: list[int] = []
        for uid in uids:
            fd = os.open(os.path.join(lock_dir, f"{uid}.lock"),
                         os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                break
            fds.append(fd)
        if len(fds) == count:
            return UidClaim(uids, fds)
        UidClaim([], fds).release()
    raise OSError(f"no {count} free sandbox uids in {blocks} blocks from {base} "
                  f"(other servers hold them, or accounts use them; see {lock_dir})")


def _has_account(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True


def drop_to(uid: int, gid: int) -> None:
    """Become ``uid:gid`` for real, effective and saved ids, with no supplementary groups."""
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)


def run_as(uid: int, gid: int, fn: Callable[[Any], Any], arg: Any) -> Any:
    """Run ``fn(arg)`` in a forked child running as ``uid:gid``; return its JSON-able result."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        status = 1
        try:
            os.close(read_end)
            drop_to(uid, gid)
            data = json.dumps(fn(arg)).encode()
            with os.fdopen(write_end, "wb") as out:
                out.write(data)
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as src:
        data = src.read()
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise OSError(f"could not run a check as uid {uid}")
    return json.loads(data)


def traversal_blockers(paths: list[str]) -> dict[str, str | None]:
    """For each unreadable path, the directory whose permissions block reaching it.

    Meant to run under the sandbox identity (see :func:`run_as`). Readable paths are left
    out; a path that can be reached but not listed maps to ``None`` (nothing to fix by
    mounting).
    """
    out: dict[str, str | None] = {}
    for path in paths:
        try:
            os.listdir(path)
            continue
        except PermissionError:
            pass
        except OSError:
            continue
        parts = path.strip("/").split("/")
        blocker = None
        for i in range(1, len(parts) + 1):
            here = "/" + "/".join(parts[:i])
            try:
                os.stat(here)
            except PermissionError:
                blocker = "/" + "/".join(parts[: i - 1])
                break
        out[path] = blocker
    return out


def first_unreachable(path: str) -> str | None:
    """The first directory on the way to ``path`` that cannot be reached (stat), or None.

    Meant to run under the sandbox identity (see :func:`run_as`).
    """
    parts = path.strip("/").split("/")
    for i in range(1, len(parts) + 1):
        here = "/" + "/".join(parts[:i])
        try:
            os.stat(here)
        except OSError:
            return here
    return None


def tasks_of(uid: int) -> int:
    """How many tasks (processes and threads, what ``RLIMIT_NPROC`` counts) ``uid`` runs."""
    total = 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status", "rb") as f:
                status = f.read()
        except OSError:
            continue
        fields = dict(line.split(b":", 1) for line in status.splitlines() if b":" in line)
        if int(fields.get(b"Uid", b"-1 0").split()[0]) == uid:
            total += int(fields.get(b"Threads", b"1").strip())
    return total
