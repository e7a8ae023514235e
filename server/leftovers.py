"""Temporary names that say which process wrote them, so a restart can sweep a dead one's.

A crashed (SIGKILLed) server leaves partial uploads and sandbox directories behind. Each such
name carries ``<host>-<pid>`` (:func:`owner_tag`); on start, whatever a process of this host
that no longer runs left behind is removed at once, instead of waiting for an age limit.
Names of another host are never judged by pid (a shared data directory may hold a live
replica's files), and a pid that is alive again (reused) keeps its files: sweeping is
conservative.
"""

from __future__ import annotations

import os
import re
import socket

#: This host, as it appears in temporary names (no ``-``, so the pid that follows is certain).
HOST = re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname())[:64] or "host"
#: The regular expression of an owner tag, with groups ``host`` and ``pid``.
OWNER = r"(?P<host>[A-Za-z0-9._]+)-(?P<pid>\d+)"


def owner_tag() -> str:
    """``<host>-<pid>`` of the calling process."""
    return f"{HOST}-{os.getpid()}"


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (of any user)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def owner_gone(match: re.Match[str], *, starting: bool) -> bool:
    """Whether the writer named by ``match`` (of :data:`OWNER`) is a dead process of this host.

    Args:
        starting: The caller has not created any such file yet, so its own pid in a name
            means an earlier process that had the same pid (a container's server is often
            pid 1 on every start).
    """
    if match["host"] != HOST:
        return False
    pid = int(match["pid"])
    if pid == os.getpid():
        return starting
    return not pid_alive(pid)
