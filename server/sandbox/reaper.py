"""Killing and reaping everything a cell started, in the worker process.

The worker is a child subreaper (``PR_SET_CHILD_SUBREAPER``): whatever a cell forks, even
after ``setsid`` or a double fork, is re-parented to the worker when its parent dies. So "the
worker has no children left" means "nothing of the cell is left", and it can be checked with
one ``waitpid``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time

PR_SET_CHILD_SUBREAPER = 36


def _children_of(pid: int) -> list[int]:
    """Pids whose parent is ``pid`` (scans ``/proc``; only used when something survived)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name may hold spaces or parentheses: parse from the last ')'.
        fields = stat[stat.rfind(b")") + 2:].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            found.append(int(name))
    return found


def _reap_exited() -> bool:
    """Reap every exited child; return whether any child (alive) remains."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return False
        if pid == 0:
            return True


def kill_tree(pid: int, *, reaped: bool = False, timeout_s: float = 5.0) -> bool:
    """SIGKILL the cell ``pid`` (a session leader), its group and every other descendant.

    Everything is reaped. Signals only go to pids that cannot have been recycled: the cell
    before it is reaped (``reaped=False``; its group id stays reserved while any member
    lives), and unreaped children of this worker.

    Returns whether the worker was left with no children (False only if some descendant
    survived ``timeout_s`` of killing, which would be a kernel-level surprise).
    """
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    if not reaped:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    deadline = time.monotonic() + timeout_s
    delay = 0.0002
    while _reap_exited():
        if time.monotonic() > deadline:
            return False
        for child in _children_of(os.getpid()):
            for kill in (os.killpg, os.kill):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    kill(child, signal.SIGKILL)
        time.sleep(delay)
        delay = min(delay * 2, 0.02)
    return True


def kill_all_of_uid(uid: int, gid: int, *, attempts: int = 50) -> None:
    """SIGKILL every process running as ``uid`` (needs root), e.g. left by a dead worker.

    A helper drops to ``uid`` and calls ``kill(-1, SIGKILL)``, which the kernel applies to
    every process that uid may signal except the caller, atomically with respect to forks.
    """
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the helper
        try:
            os.setgroups([])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
            for _ in range(attempts):
                os.kill(-1, signal.SIGKILL)
                time.sleep(0.001)
        except ProcessLookupError:
            os._exit(0)
        except BaseException:
            os._exit(1)
        os._exit(0)
    os.waitpid(pid, 0)
    _reap_exited()
