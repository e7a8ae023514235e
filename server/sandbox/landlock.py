"""Landlock (Linux >= 5.13) through its three syscalls, for the cell processes.

A ruleset lists what a process may still do with the filesystem once it restricts itself;
everything else it handles is denied, whatever the file permissions say. From ABI 6 (Linux
6.12) it also scopes signals and abstract UNIX sockets to the process's own domain, so a cell
cannot signal the worker or the server even when they share its uid. Landlock additionally
denies ptrace-style access (``/proc/<pid>/environ``, ``/proc/<pid>/mem``) to processes
outside the domain.

Written against the kernel ABI directly: the PyPI binding is a dev release without scopes.
"""

from __future__ import annotations

import ctypes
import os
from functools import cache

_SYS_CREATE_RULESET = 444  # the same number on every architecture
_SYS_ADD_RULE = 445
_SYS_RESTRICT_SELF = 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_RULE_NET_PORT = 2
PR_SET_NO_NEW_PRIVS = 38

EXECUTE = 1 << 0
WRITE_FILE = 1 << 1
READ_FILE = 1 << 2
READ_DIR = 1 << 3
REMOVE_DIR = 1 << 4
REMOVE_FILE = 1 << 5
MAKE_CHAR = 1 << 6
MAKE_DIR = 1 << 7
MAKE_REG = 1 << 8
MAKE_SOCK = 1 << 9
MAKE_FIFO = 1 << 10
MAKE_BLOCK = 1 << 11
MAKE_SYM = 1 << 12
REFER = 1 << 13  # ABI 2
TRUNCATE = 1 << 14  # ABI 3
IOCTL_DEV = 1 << 15  # ABI 5

NET_BIND_TCP = 1 << 0  # ABI 4
NET_CONNECT_TCP = 1 << 1  # ABI 4

SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0  # ABI 6
SCOPE_SIGNAL = 1 << 1  # ABI 6

READ = EXECUTE | READ_FILE | READ_DIR
_FILE_ONLY = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64),
                ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _NetPortAttr(ctypes.Structure):
    _fields_ = [("allowed_access", ctypes.c_uint64), ("port", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1  # the kernel struct is packed
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


@cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _syscall(number: int, *args: object) -> int:
    result = _libc().syscall(ctypes.c_long(number), *args)
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(result)


def prctl(option: int, arg: int) -> None:
    """``prctl(option, arg, 0, 0, 0)``, raising ``OSError`` on failure."""
    if _libc().prctl(option, ctypes.c_ulong(arg), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@cache
def abi_version() -> int:
    """The kernel's Landlock ABI version, 0 when Landlock is missing or disabled."""
    try:
        return _syscall(_SYS_CREATE_RULESET, None, ctypes.c_size_t(0),
                        ctypes.c_uint32(_CREATE_RULESET_VERSION))
    except (OSError, AttributeError):
        return 0


def _handled_fs(abi: int) -> int:
    handled = (1 << 13) - 1  # ABI 1: EXECUTE .. MAKE_SYM
    if abi >= 2:
        handled |= REFER
    if abi >= 3:
        handled |= TRUNCATE
    if abi >= 5:
        handled |= IOCTL_DEV
    return handled


class Ruleset:
    """A Landlock ruleset being built; :meth:`restrict_self` applies it to the caller.

    Build it once in the worker; every forked cell inherits the descriptor and only calls
    :meth:`restrict_self`, which costs one syscall.

    With ``net=True`` (and ABI >= 4) it also handles TCP: binding is denied and connecting
    allowed only to the ports given to :meth:`allow_port`.
    """

    def __init__(self, abi: int | None = None, *, net: bool = False) -> None:
        self.abi = abi_version() if abi is None else abi
        if self.abi < 1:
            raise OSError("Landlock is not available on this kernel")
        self.handled = _handled_fs(self.abi)
        self.handled_net = NET_BIND_TCP | NET_CONNECT_TCP if net and self.abi >= 4 else 0
        scoped = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if self.abi >= 6 else 0
        attr = _RulesetAttr(self.handled, self.handled_net, scoped)
        # Older kernels reject a struct larger than they know unless the tail is zero; send
        # only the part this ABI understands.
        size = 24 if self.abi >= 6 else 16 if self.abi >= 4 else 8
        self.fd = _syscall(_SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size),
                           ctypes.c_uint32(0))
        os.set_inheritable(self.fd, False)
        self.scoped = scoped

    def allow(self, path: str, access: int) -> None:
        """Allow ``access`` on ``path`` and everything beneath it (symlinks are followed)."""
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        try:
            if not os.path.isdir(path):
                access &= _FILE_ONLY
            rule = _PathBeneathAttr(access & self.handled, fd)
            _syscall(_SYS_ADD_RULE, ctypes.c_int(self.fd), ctypes.c_int(_RULE_PATH_BENEATH),
                     ctypes.byref(rule), ctypes.c_uint32(0))
        finally:
            os.close(fd)

    def allow_port(self, port: int, access: int = NET_CONNECT_TCP) -> None:
        """Allow ``access`` (connecting, by default) to TCP ``port`` on any address."""
        if not self.handled_net:
            return
        rule = _NetPortAttr(access & self.handled_net, port)
        _syscall(_SYS_ADD_RULE, ctypes.c_int(self.fd), ctypes.c_int(_RULE_NET_PORT),
                 ctypes.byref(rule), ctypes.c_uint32(0))

    def restrict_self(self) -> None:
        """Confine the calling process (and its future children) to the ruleset. Irreversible."""
        prctl(PR_SET_NO_NEW_PRIVS, 1)
        _syscall(_SYS_RESTRICT_SELF, ctypes.c_int(self.fd), ctypes.c_uint32(0))

    def close(self) -> None:
        """Release the ruleset descriptor."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
