"""The worker's own network namespace: no interface but its loopback, no route anywhere.

A worker that may (CAP_SYS_ADMIN, i.e. a root server) moves into a new network namespace
before it forks any cell. Nothing of the host is reachable from there: not its loopback
services (the database, the server's own port), not its private networks, not the internet.
In mode ``public`` the worker brings that private loopback up and opens one listening socket
on it, which it hands to the pool: the pool's egress proxy accepts the cells' connections
from it and makes the outbound ones itself, after checking the resolved address
(:mod:`.egress`).
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import socket
import struct
from functools import cache

CLONE_NEWNET = 0x40000000
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1


@cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def enter_new_namespace() -> None:
    """Move the calling process into a new, empty network namespace (needs CAP_SYS_ADMIN)."""
    if _libc().unshare(CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare(CLONE_NEWNET): {os.strerror(err)}")


def bring_loopback_up() -> None:
    """Set ``lo`` up in the current namespace (a new namespace starts with it down)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        request = struct.pack("16sh14x", b"lo", 0)
        flags = struct.unpack("16sh14x", fcntl.ioctl(s, _SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(s, _SIOCSIFFLAGS, struct.pack("16sh14x", b"lo", flags | _IFF_UP))


def open_proxy_listener() -> socket.socket:
    """A listening TCP socket on ``127.0.0.1`` of the current namespace, on a free port."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    return listener
