"""The seccomp filter of the cell processes: what network syscalls a cell may make.

Built once per worker with libseccomp (through ``pyseccomp``), compiled to BPF, and loaded by
each forked cell with one ``prctl`` call. Whatever the network mode:

* ``bind`` and ``listen`` fail (``EACCES``): a cell never serves anything.
* ``socket`` works only for ``AF_INET``/``AF_INET6`` (mode ``public``) or not at all (mode
  ``off``): no pathname UNIX sockets (the database's or Docker's socket), no netlink, no raw
  packets. ``socketpair`` stays allowed (asyncio needs it; the pair is connected only to
  itself).
* ``io_uring`` is refused (``ENOSYS``): its operations would bypass this filter.
* New namespaces are refused (``unshare``, ``setns``, ``clone`` with a namespace flag;
  ``clone3``, whose flags seccomp cannot see, reports ``ENOSYS`` so libc falls back to
  ``clone``).

Syscalls of another ABI (32-bit ``int 0x80``, x32) kill the cell: libseccomp's default for a
foreign architecture.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
from functools import cache

_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
_CLONE_NAMESPACE_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000,
                          0x20000000, 0x40000000, 0x00000080)  # NS CGROUP UTS IPC USER PID NET TIME
MODES = ("off", "public")


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


class CompiledFilter:
    """A BPF program ready to be loaded by a forked cell (one syscall, no library calls)."""

    def __init__(self, program: bytes, mode: str) -> None:
        self.mode = mode
        self._buffer = ctypes.create_string_buffer(program, len(program))
        self._prog = _SockFprog(len(program) // 8, ctypes.addressof(self._buffer))

    def load(self) -> None:
        """Apply the filter to the calling process and its future children. Irreversible.

        Needs ``no_new_privs`` (set by the cell before) or CAP_SYS_ADMIN.
        """
        if _libc().prctl(_PR_SET_SECCOMP, ctypes.c_ulong(_SECCOMP_MODE_FILTER),
                      ctypes.byref(self._prog), 0, 0) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"seccomp: {os.strerror(err)}")


@cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


@cache
def _seccomp():
    import pyseccomp  # a ctypes binding of libseccomp

    return pyseccomp


def compile_filter(mode: str) -> CompiledFilter:
    """The cell filter for network mode ``mode`` (``off`` or ``public``).

    Raises:
        ValueError: an unknown mode.
        OSError, ImportError, RuntimeError: libseccomp (or its binding) is missing or refused
            the filter; the caller must then not run cells with network access.
    """
    if mode not in MODES:
        raise ValueError(f"unknown sandbox network mode {mode!r}; use one of {MODES}")
    sc = _seccomp()
    f = sc.SyscallFilter(sc.ALLOW)
    denied = sc.ERRNO(errno.EACCES)
    for name in ("bind", "listen"):
        f.add_rule(denied, name)
    if mode == "off":
        f.add_rule(denied, "socket")
    else:
        inet, inet6 = int(socket.AF_INET), int(socket.AF_INET6)
        f.add_rule(denied, "socket", sc.Arg(0, sc.LT, inet))
        f.add_rule(denied, "socket", sc.Arg(0, sc.GT, inet6))
        for family in range(inet + 1, inet6):
            f.add_rule(denied, "socket", sc.Arg(0, sc.EQ, family))
    for name in ("io_uring_setup", "io_uring_enter", "io_uring_register", "clone3"):
        f.add_rule(sc.ERRNO(errno.ENOSYS), name)
    for name in ("unshare", "setns"):
        f.add_rule(sc.ERRNO(errno.EPERM), name)
    for flag in _CLONE_NAMESPACE_FLAGS:
        f.add_rule(sc.ERRNO(errno.EPERM), "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
    with open(os.memfd_create("rowforge-cell-filter", os.MFD_CLOEXEC), "w+b") as out:
        f.export_bpf(out)  # libseccomp writes to the descriptor itself
        program = os.pread(out.fileno(), 1 << 20, 0)
    if not program or len(program) % 8:
        raise RuntimeError("libseccomp produced no usable filter")
    return CompiledFilter(program, mode)
