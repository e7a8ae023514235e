"""The forked child that runs one cell: confine itself, run the code, send ``row[column]``.

Everything here runs after ``fork()`` in the worker, so it must not touch the worker's
protocol descriptors (they are replaced by ``/dev/null`` first thing) and must end in
``os._exit``. Only the original cell process reports: forked copies of it that fall out of the
user's code exit silently, so a fork bomb cannot garble the result pipe.
"""

from __future__ import annotations

import builtins
import errno
import os
import resource
import signal
import sys
import tempfile
import types
from dataclasses import dataclass
from typing import Any, NoReturn

import msgpack

from rowforge.server.sandbox import identity
from rowforge.server.sandbox.landlock import Ruleset, prctl
from rowforge.server.sandbox.protocol import HEADER, write_all
from rowforge.server.sandbox.syscall_filter import CompiledFilter

FILENAME = "<python column>"
RESULT_FD = 3
EXIT_SETUP_FAILED = 70
_PR_SET_PDEATHSIG = 1
_PR_SET_DUMPABLE = 4
_PR_SET_NO_NEW_PRIVS = 38
_MAX_DETAIL = 1000
MIB = 1024 * 1024
_NETWORK_RULES = {
    "off": "Python cells have no network access on this server (sandbox_network = \"off\")",
    "public": "Python cells may not listen, and reach public addresses only, through the HTTP "
              "proxy in their environment (HTTP_PROXY/HTTPS_PROXY)",
}


@dataclass
class CellSpec:
    """How to confine and run one cell (built by the worker before forking)."""

    column: str
    limits: dict[str, Any]
    cell_dir: str
    worker_pid: int
    syscall_filter: CompiledFilter  # what network syscalls the cell may make
    uid: int | None = None  # None: keep the worker's identity (server not running as root)
    gid: int | None = None
    ruleset: Ruleset | None = None
    nproc_base: int = 0  # tasks the cell's uid already runs (non-root mode)


def size_text(n: int) -> str:
    """``16 MB``, ``1.5 MB``, ``812 bytes``."""
    if n < MIB // 10:
        return f"{n} bytes" if n < 10_000 else f"{n / 1024:.0f} KB"
    return f"{n / MIB:.1f}".removesuffix(".0") + " MB"


def _frame(message: dict[str, Any]) -> bytes:
    body = msgpack.packb(message, use_bin_type=True)
    return HEADER.pack(len(body)) + body


def _vm_size() -> int:
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[0]) * resource.getpagesize()


def _lower(which: int, soft: int, hard: int) -> None:
    """Set a limit, never above the current hard limit (which only root could raise)."""
    _, current = resource.getrlimit(which)
    if current != resource.RLIM_INFINITY:
        hard = min(hard, current)
    resource.setrlimit(which, (min(soft, hard), hard))


def _confine(spec: CellSpec, out: list[int]) -> None:
    """Apply every restriction; ``out[0]`` is the result descriptor (moved to RESULT_FD)."""
    os.setsid()
    limits = spec.limits
    memory = _vm_size() + limits["memory_mb"] * MIB
    cpu = limits["cpu_s"]
    nproc = spec.nproc_base + limits["max_processes"]
    for which, soft, hard in (
        (resource.RLIMIT_AS, memory, memory),
        # SIGXCPU at the soft limit; the hard limit (SIGKILL) backs it up.
        (resource.RLIMIT_CPU, cpu, cpu + 1),
        (resource.RLIMIT_FSIZE, limits["max_file_size_mb"] * MIB,
         limits["max_file_size_mb"] * MIB),
        (resource.RLIMIT_NPROC, nproc, nproc),
        (resource.RLIMIT_CORE, 0, 0),
    ):
        _lower(which, soft, hard)
    devnull = os.open("/dev/null", os.O_RDWR)
    if spec.uid is not None and spec.gid is not None:
        identity.drop_to(spec.uid, spec.gid)
    # Die with the worker (set after the uid change, which clears it), unless it already died.
    prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != spec.worker_pid:
        os._exit(EXIT_SETUP_FAILED)
    prctl(_PR_SET_NO_NEW_PRIVS, 1)  # no setuid binaries, no file capabilities
    prctl(_PR_SET_DUMPABLE, 0)  # no ptrace or /proc/<pid>/mem from same-uid processes
    if spec.ruleset is not None:
        spec.ruleset.restrict_self()
    spec.syscall_filter.load()
    os.chdir(spec.cell_dir)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.dup2(out[0], RESULT_FD, inheritable=False)
    out[0] = RESULT_FD
    os.closerange(RESULT_FD + 1, 1 << 16)
    nofile = limits["max_open_files"]
    _lower(resource.RLIMIT_NOFILE, nofile, nofile)
    for name in ("HOME", "TMPDIR", "MPLCONFIGDIR", "XDG_CACHE_HOME"):
        os.environ[name] = spec.cell_dir
    tempfile.tempdir = spec.cell_dir
    sys.argv = [FILENAME]


def _user_line(tb: types.TracebackType | None) -> int | None:
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == FILENAME:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _text(exc: BaseException) -> str:
    try:
        text = str(exc)
    except Exception:
        text = ""
    return text if len(text) <= _MAX_DETAIL else text[:_MAX_DETAIL] + "..."


def _at(exc: BaseException) -> str:
    line = _user_line(exc.__traceback__)
    return f" (line {line})" if line else ""


class _Unstorable(TypeError):
    """A value msgpack cannot carry; ``args[0]`` is its type name."""


def _to_plain(value: Any) -> Any:
    # NumPy scalars and arrays are common results; everything else has to be explicit.
    if type(value).__module__.split(".")[0] == "numpy" and hasattr(value, "tolist"):
        return value.tolist()
    raise _Unstorable(type(value).__name__)


def _execute(code: str, row: dict[str, Any], spec: CellSpec, me: int) -> dict[str, Any]:
    """Run the code; the result message (``ok`` + ``value``, or ``kind`` + ``message``)."""
    column = spec.column
    prefix = f"Python column {column!r}"

    def fail(kind: str, detail: str) -> dict[str, Any]:
        return {"ok": False, "kind": kind, "message": f"{prefix} {detail}"}

    try:
        compiled = compile(code, FILENAME, "exec")
    except SyntaxError as exc:
        at = f" (line {exc.lineno})" if exc.lineno else ""
        return fail("exception", f"has a syntax error: {exc.msg}{at}")
    namespace: dict[str, Any] = {"row": row, "__name__": "__main__", "__builtins__": builtins}
    try:
        exec(compiled, namespace)
    except SystemExit as exc:
        if os.getpid() != me:
            os._exit(0)
        if exc.code not in (None, 0):  # like a script: sys.exit() / sys.exit(0) just end it
            return fail("exit", f"called sys.exit({exc.code!r})")
    except MemoryError:
        raise
    except PermissionError as exc:
        if os.getpid() != me:
            os._exit(1)
        if exc.errno == errno.EACCES and exc.filename is None:  # a socket call, not a file
            return fail("forbidden", f"was denied network access: {_text(exc)}{_at(exc)}; "
                        + _NETWORK_RULES[spec.syscall_filter.mode])
        return fail("forbidden", f"was denied access: {_text(exc)}{_at(exc)}")
    except BaseException as exc:
        if os.getpid() != me:
            os._exit(1)
        text = _text(exc)
        name = type(exc).__name__
        return fail("exception", f"raised {name}: {text}{_at(exc)}" if text
                    else f"raised {name}{_at(exc)}")
    if os.getpid() != me:
        os._exit(0)
    out = namespace.get("row")
    if not isinstance(out, dict) or column not in out:
        return fail("no_output", f"did not assign row[{column!r}]")
    return {"ok": True, "value": out[column]}


def run(spec: CellSpec, payload: bytearray, result_fd: int) -> NoReturn:
    """Confine this (freshly forked) process, run the cell, write one frame, exit."""
    prefix = f"Python column {spec.column!r}"
    out = [result_fd]
    try:
        _confine(spec, out)
        job = msgpack.unpackb(payload, raw=False, strict_map_key=False)
        payload[:] = b""
        code, row = job["code"], job["row"]
        memory_frame = _frame({"ok": False, "kind": "memory", "message":
                               f"{prefix} exceeded the memory limit "
                               f"({spec.limits['memory_mb']} MB)"})
    except BaseException as exc:
        frame = _frame({"ok": False, "kind": "crashed",
                        "message": f"{prefix} could not be started in the sandbox: {exc}"})
        try:
            write_all(out[0], frame)
        finally:
            os._exit(EXIT_SETUP_FAILED)
    me = os.getpid()
    status = 0
    try:
        try:
            message = _execute(code, row, spec, me)
            if message["ok"]:
                try:
                    body = msgpack.packb(message, use_bin_type=True, default=_to_plain)
                except (TypeError, ValueError, OverflowError) as exc:
                    outer = type(message["value"]).__name__
                    if isinstance(exc, _Unstorable):
                        what = (f"a {outer}" if exc.args[0] == outer
                                else f"a {outer} holding a {exc.args[0]}")
                    else:
                        what = f"a {outer} that cannot be stored ({_text(exc)})"
                    message = {"ok": False, "kind": "exception", "message":
                               f"{prefix} assigned {what}, which cannot be stored; use str, int, "
                               "float, bool, None, bytes, or lists and dicts (with str keys) of "
                               "these"}
                else:
                    limit = spec.limits["max_output_bytes"]
                    if len(body) > limit:
                        message = {"ok": False, "kind": "output_too_large", "message":
                                   f"{prefix} produced {size_text(len(body))} of output, more "
                                   f"than the {size_text(limit)} limit"}
                    else:
                        write_all(RESULT_FD, HEADER.pack(len(body)), body)
                        os._exit(0)
            frame = _frame(message)
        except MemoryError:
            if os.getpid() != me:
                os._exit(1)
            row = message = None  # free what we can
            frame = memory_frame
        write_all(RESULT_FD, frame)
    except BaseException:
        status = 1  # the user's code closed or broke the result pipe: the worker reports it
    os._exit(status)
