"""A sandbox worker process: ``python -I -m rowforge.server.sandbox.worker``.

Started by :class:`~rowforge.server.sandbox.pool.SandboxPool` with a scrubbed environment.
It pre-imports common libraries once, then for every cell forks a child that confines itself
and runs the code (see :mod:`.cell`). The worker itself never runs user code and never
unpacks cell data: it moves opaque frames, wipes them after use (so a later cell cannot find
an earlier cell's data in the memory it inherits), enforces the wall-clock timeout, and kills
and reaps everything the cell started before it answers.

It is single-threaded on purpose: forking a threaded process is unsafe.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib
import os
import selectors
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections import defaultdict
from typing import Any

from rowforge.server.sandbox import (
    cell,
    fs_policy,
    identity,
    landlock,
    mounts,
    netns,
    reaper,
    syscall_filter,
)
from rowforge.server.sandbox.cell import CellSpec, size_text
from rowforge.server.sandbox.protocol import HEADER, FrameReader, pack, write_all

_PR_SET_PDEATHSIG = 1
#: Room for the frame's own msgpack overhead on top of ``max_output_bytes``.
_FRAME_SLACK = 64 * 1024


class PoolGone(Exception):
    """The pool closed our stdin: stop."""


def wipe(buf: bytearray) -> None:
    """Zero a buffer in place."""
    if buf:
        ctypes.memset((ctypes.c_char * len(buf)).from_buffer(buf), 0, len(buf))


def seconds_text(seconds: float) -> str:
    """``10 s``, ``0.5 s``."""
    return f"{seconds:g} s"


def _oom_kills() -> int:
    try:
        with open("/proc/vmstat", "rb") as f:
            for line in f:
                if line.startswith(b"oom_kill "):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class _ResultReader:
    """Reads one length-prefixed frame from a non-blocking pipe, refusing oversized ones."""

    def __init__(self, fd: int, limit: int) -> None:
        self.fd = fd
        self.limit = limit
        self.head = bytearray(HEADER.size)
        self.body: bytearray | None = None
        self.got = 0
        self.size = 0

    @property
    def started(self) -> bool:
        return self.got > 0 or self.body is not None

    def pump(self) -> str:
        """Read what is available: ``partial``, ``done``, ``eof`` or ``too_large``."""
        while True:
            target = self.head if self.body is None else self.body
            if self.body is not None and self.got == len(self.body):
                return "done"
            try:
                n = os.readv(self.fd, [memoryview(target)[self.got:]])
            except BlockingIOError:
                return "partial"
            if n == 0:
                return "eof"
            self.got += n
            if self.body is None and self.got == HEADER.size:
                (self.size,) = HEADER.unpack(self.head)
                if self.size > self.limit:
                    return "too_large"
                self.body = bytearray(self.size)
                self.got = 0


class Worker:
    """One worker: its configuration, its confinement ruleset and the job loop."""

    def __init__(self, config: dict[str, Any], reader: FrameReader, out_fd: int) -> None:
        self.reader = reader
        self.out_fd = out_fd
        self.pid = os.getpid()
        self.slot = int(config["slot"])
        self.privileged = os.geteuid() == 0
        self.uid: int | None = int(config["uid"]) if self.privileged else None
        self.gid: int | None = int(config["gid"]) if self.privileged else None
        self.preload_failed: list[str] = []
        for name in config.get("preload", ()):
            try:
                importlib.import_module(name)
            except Exception:
                self.preload_failed.append(name)
        self.slot_dir = os.path.join(config["cell_root"], f"slot-{self.slot}")
        os.makedirs(self.slot_dir, exist_ok=True)
        os.chmod(self.slot_dir, 0o711 if self.privileged else 0o700)
        self.exposed: list[str] = []
        self.disk_quota_mb = 0
        self.processes_hidden = False
        if self.uid is not None and self.gid is not None:
            reaper.kill_all_of_uid(self.uid, self.gid)  # whatever a dead predecessor left
            self._make_python_reachable()
            self._make_slot_reachable()
            try:
                disk = int(config["limits"]["max_disk_mb"])
                mounts.mount_tmpfs(self.slot_dir, size_mb=disk, mode=0o711)
                self.disk_quota_mb = disk
            except OSError as exc:  # e.g. a container without CAP_SYS_ADMIN: plain directories
                print(f"rowforge sandbox worker: no tmpfs for cells ({exc})", file=sys.stderr)
            try:
                mounts.hide_other_processes()
                self.processes_hidden = True
            except OSError as exc:
                print(f"rowforge sandbox worker: /proc not hidden ({exc})", file=sys.stderr)
        self.network_layers: list[str] = []
        self.network_note = ""
        self.proxy_port = 0
        self.network = self._isolate_network(config)
        try:
            self.syscall_filter = syscall_filter.compile_filter(self.network)
        except Exception as exc:
            raise RuntimeError("cannot restrict the network of Python cells: seccomp is "
                               f"unavailable ({type(exc).__name__}: {exc})") from None
        self.network_layers.insert(0, "seccomp")
        self.ruleset: landlock.Ruleset | None = None
        if config.get("landlock", True) and landlock.abi_version() > 0:
            self.ruleset = self._build_ruleset(config)
            if self.ruleset.handled_net:
                self.network_layers.append("landlock-tcp")
        self.selector = selectors.DefaultSelector()
        self.reaped = False
        # Forked cells share the worker's pages until they write to them; keep the collector
        # (in cells) from walking, and so copying, everything the worker imported.
        gc.freeze()

    def _isolate_network(self, config: dict[str, Any]) -> str:
        """Enter a private network namespace; in mode ``public`` open the proxy's listener.

        Returns the mode cells really get: ``public`` degrades to ``off`` when the worker
        cannot have its own namespace (a server that is not root).
        """
        mode = config.get("network", "off")
        try:
            netns.enter_new_namespace()
            self.network_layers.append("netns")
        except OSError as exc:
            if mode == "public":
                self.network_note = (f"sandbox_network = \"public\" needs a network namespace of "
                                     f"its own for the workers ({exc}); Python cells run "
                                     "without network")
                mode = "off"
        if mode != "public":
            return mode
        netns.bring_loopback_up()
        with netns.open_proxy_listener() as listener, \
                socket.socket(fileno=int(config["egress_fd"])) as channel:
            self.proxy_port = listener.getsockname()[1]
            socket.send_fds(channel, [b"L"], [listener.fileno()])
        url = f"http://127.0.0.1:{self.proxy_port}"
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
            os.environ[name] = os.environ[name.lower()] = url
        for name in ("NO_PROXY", "no_proxy"):
            os.environ.pop(name, None)
        return mode

    def _make_python_reachable(self) -> None:
        assert self.uid is not None and self.gid is not None
        paths = fs_policy.readable_roots(fs_policy.python_read_roots(), [])
        blocked = identity.run_as(self.uid, self.gid, identity.traversal_blockers, paths)
        if not blocked:
            return
        groups: dict[str, list[str]] = defaultdict(list)
        for path, blocker in blocked.items():
            if blocker is None:
                raise RuntimeError(f"the sandbox uid {self.uid} cannot read {path}")
            groups[blocker].append(path)
        mounts.expose(groups)
        still = identity.run_as(self.uid, self.gid, identity.traversal_blockers, paths)
        if still:
            raise RuntimeError(f"the sandbox uid {self.uid} still cannot read {sorted(still)}")
        self.exposed = sorted(blocked)

    def _make_slot_reachable(self) -> None:
        """Let the sandbox uid reach its slot directory when it lives in the (0700) data dir.

        The blocking directory is covered, in the worker's mount namespace only, with an empty
        tmpfs holding just the path to the slot (so cells see nothing of the data directory
        either). Without mounts (no CAP_SYS_ADMIN) the slot moves to the system temp dir.
        """
        assert self.uid is not None and self.gid is not None
        blocked = identity.run_as(self.uid, self.gid, identity.first_unreachable, self.slot_dir)
        if blocked is None:
            return
        try:
            if os.path.exists(blocked):  # its parent's mode keeps the uid out
                mounts.cover(os.path.dirname(blocked), mode=0o711)
            _makedirs_traversable(self.slot_dir)
        except OSError as exc:
            self.slot_dir = tempfile.mkdtemp(prefix=f"rowforge-sandbox-slot{self.slot}-")
            os.chmod(self.slot_dir, 0o711)
            print(f"rowforge sandbox worker: cells work in {self.slot_dir} (cannot mount: {exc})",
                  file=sys.stderr)
        still = identity.run_as(self.uid, self.gid, identity.first_unreachable, self.slot_dir)
        if still is not None:
            raise RuntimeError(f"the sandbox uid {self.uid} cannot reach {still}")

    def _build_ruleset(self, config: dict[str, Any]) -> landlock.Ruleset:
        ruleset = landlock.Ruleset(net=True)
        if self.proxy_port:
            ruleset.allow_port(self.proxy_port)
        roots = [*fs_policy.SYSTEM_READ_ROOTS, *fs_policy.python_read_roots(),
                 *config.get("extra_read_paths", ())]
        for path in fs_policy.readable_roots(roots, config.get("forbidden", ())):
            ruleset.allow(path, landlock.READ)
        for path in fs_policy.DEVICE_FILES:
            if os.path.exists(path):
                ruleset.allow(path, landlock.READ_FILE | landlock.WRITE_FILE
                              | landlock.TRUNCATE | landlock.IOCTL_DEV)
        ruleset.allow(self.slot_dir, ruleset.handled)
        return ruleset

    def ready_message(self) -> dict[str, Any]:
        return {"t": "ready", "pid": self.pid, "uid": self.uid if self.privileged else os.getuid(),
                "privileged": self.privileged,
                "landlock": self.ruleset.abi if self.ruleset else 0,
                "signals_scoped": bool(self.ruleset and self.ruleset.scoped),
                "preload_failed": self.preload_failed, "exposed": self.exposed,
                "disk_quota_mb": self.disk_quota_mb, "processes_hidden": self.processes_hidden,
                "network": self.network, "network_layers": self.network_layers,
                "network_note": self.network_note}

    def send(self, *chunks: bytes | bytearray) -> None:
        write_all(self.out_fd, *chunks)

    def serve(self) -> None:
        """Answer jobs until the pool closes our stdin."""
        while True:
            message = self.reader.read_message()
            if message is None:
                return
            if message.get("t") != "run":
                continue  # a cancel for a job that already finished
            payload = self.reader.read_into()
            if payload is None:
                return
            try:
                self.run_job(message, payload)
            except PoolGone:
                raise
            except Exception as exc:  # a fault of the sandbox itself: report it, keep serving
                print(f"rowforge sandbox worker: {exc!r}", file=sys.stderr)
                self.send(*self._error(message, "crashed",
                                       f"could not be run: the sandbox failed ({exc})"))

    def run_job(self, job: dict[str, Any], payload: bytearray) -> None:
        """Run one cell and send its answer."""
        cell_dir = tempfile.mkdtemp(prefix="cell-", dir=self.slot_dir)
        if self.uid is not None and self.gid is not None:
            os.chown(cell_dir, self.uid, self.gid)
        spec = CellSpec(column=job["column"], limits=job["limits"], cell_dir=cell_dir,
                        worker_pid=self.pid, uid=self.uid, gid=self.gid, ruleset=self.ruleset,
                        syscall_filter=self.syscall_filter,
                        nproc_base=0 if self.privileged else identity.tasks_of(os.getuid()))
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        oom_before = _oom_kills()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the cell
            cell.run(spec, payload, write_end)
        os.close(write_end)
        wipe(payload)
        self.reaped = False
        try:
            answer = self._supervise(job, pid, read_end, oom_before)
        finally:
            # The cell is over whatever happened: nothing it started may outlive it.
            reaper.kill_tree(pid, reaped=self.reaped)
            os.close(read_end)
            shutil.rmtree(cell_dir, ignore_errors=True)
        self.send(*answer)
        for chunk in answer:
            if isinstance(chunk, bytearray):
                wipe(chunk)

    def _error(self, job: dict[str, Any], kind: str, detail: str) -> tuple[bytes, ...]:
        message = f"Python column {job['column']!r} {detail}"
        return (pack({"t": "error", "id": job["id"], "kind": kind, "message": message}),)

    def _supervise(self, job: dict[str, Any], pid: int, read_end: int,
                   oom_before: int) -> tuple[bytes | bytearray, ...]:
        limits = job["limits"]
        timeout = float(job["timeout_s"])
        deadline = time.monotonic() + timeout
        result = _ResultReader(read_end, limits["max_output_bytes"] + _FRAME_SLACK)
        os.set_blocking(read_end, False)
        pidfd = os.pidfd_open(pid)
        sel = self.selector
        sel.register(self.reader_fd, selectors.EVENT_READ, "control")
        sel.register(read_end, selectors.EVENT_READ, "result")
        sel.register(pidfd, selectors.EVENT_READ, "exit")
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return self._error(job, "timeout", f"timed out after {seconds_text(timeout)}")
                for key, _ in sel.select(remaining):
                    if key.data == "control":
                        message = self.reader.read_message()
                        if message is None:
                            raise PoolGone
                        if message.get("t") == "cancel" and message.get("id") == job["id"]:
                            return self._error(job, "cancelled", "was cancelled")
                    elif key.data == "result":
                        state = result.pump()
                        if state == "eof":
                            sel.unregister(read_end)
                        elif state != "partial":
                            return self._finish(job, result, state)
                    else:
                        # Kill the group while the leader is unreaped (its id stays ours).
                        with contextlib.suppress(ProcessLookupError, PermissionError):
                            os.killpg(pid, signal.SIGKILL)
                        _, status, usage = os.wait4(pid, 0)
                        self.reaped = True
                        state = result.pump()
                        if state in ("done", "too_large"):
                            return self._finish(job, result, state)
                        return self._classify(job, status, usage, result, oom_before)
        finally:
            for fd in (self.reader_fd, read_end, pidfd):
                with contextlib.suppress(KeyError, ValueError):
                    sel.unregister(fd)
            os.close(pidfd)

    @property
    def reader_fd(self) -> int:
        return self.reader.fd

    def _finish(self, job: dict[str, Any], result: _ResultReader, state: str
                ) -> tuple[bytes | bytearray, ...]:
        if state == "too_large":
            limit = job["limits"]["max_output_bytes"]
            return self._error(job, "output_too_large", f"produced {size_text(result.size)} of "
                               f"output, more than the {size_text(limit)} limit")
        assert result.body is not None
        # The body as it is (no copy: the worker must keep no cell data; it is wiped after
        # it was sent).
        return (pack({"t": "result", "id": job["id"]}), HEADER.pack(len(result.body)),
                result.body)

    def _classify(self, job: dict[str, Any], status: int, usage: Any, result: _ResultReader,
                  oom_before: int) -> tuple[bytes, ...]:
        """Why the cell ended without a complete result frame."""
        limits = job["limits"]
        cpu_used = usage.ru_utime + usage.ru_stime
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu_used >= limits["cpu_s"]):
                return self._error(job, "timeout", "used more than its CPU time limit "
                                   f"({seconds_text(limits['cpu_s'])})")
            if sig == signal.SIGKILL and _oom_kills() > oom_before:
                return self._error(job, "memory", "was killed for using too much memory "
                                   f"(limit {limits['memory_mb']} MB)")
            if sig == signal.SIGXFSZ:
                return self._error(job, "crashed", "wrote a file larger than the "
                                   f"{limits['max_file_size_mb']} MB limit")
            name = signal.Signals(sig).name if sig in signal.Signals.__members__.values() \
                else str(sig)
            return self._error(job, "crashed", f"crashed (killed by {name})")
        code = os.WEXITSTATUS(status)
        if result.started:
            return self._error(job, "crashed", "sent back an incomplete result")
        if code == cell.EXIT_SETUP_FAILED:
            return self._error(job, "crashed", "could not be started in the sandbox")
        column = job["column"]
        return self._error(job, "exit", f"exited with status {code} before returning "
                           f"row[{column!r}]")


def _makedirs_traversable(path: str) -> None:
    """Create the missing directories of ``path``, each mode 0711."""
    missing = []
    while not os.path.isdir(path):
        missing.append(path)
        path = os.path.dirname(path)
    for directory in reversed(missing):
        os.mkdir(directory, 0o711)
        os.chmod(directory, 0o711)  # whatever the umask


def main() -> int:
    """Worker entry point; returns the exit status."""
    with contextlib.suppress(OSError):
        landlock.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)  # die with the server
        landlock.prctl(reaper.PR_SET_CHILD_SUBREAPER, 1)
    if os.getppid() == 1:
        return 1
    # Keep the protocol on private descriptors: a library printing at import time, or a cell,
    # must never write into the pool's stream.
    in_fd, out_fd = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(2, 1)
    os.close(devnull)
    reader = FrameReader(in_fd)
    config = reader.read_message()
    if config is None:
        return 0
    try:
        worker = Worker(config, reader, out_fd)
    except Exception as exc:
        write_all(out_fd, pack({"t": "fatal", "message": f"{type(exc).__name__}: {exc}"}))
        return 1
    worker.send(pack(worker.ready_message()))
    try:
        worker.serve()
    except PoolGone:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
