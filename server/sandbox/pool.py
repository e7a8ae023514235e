"""SandboxPool: runs Python-column code in long-lived, isolated worker processes."""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import os
import re
import shutil
import socket
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rowforge.server import leftovers
from rowforge.server.errors import Internal, InvalidArgument, Unavailable
from rowforge.server.sandbox import identity, protocol
from rowforge.server.sandbox.egress import EgressPolicy, EgressProxy
from rowforge.server.sandbox.environment import scrubbed_environment
from rowforge.server.sandbox.errors import KINDS, SandboxError
from rowforge.server.sandbox.limits import SandboxLimits
from rowforge.server.sandbox.process import WorkerProcess
from rowforge.server.sandbox.syscall_filter import MODES
from rowforge.server.sandbox.values import decode_result, pack_job

log = logging.getLogger(__name__)

#: Imported once per worker, so cells using them do not pay the import.
DEFAULT_PRELOAD: tuple[str, ...] = ("numpy", "PIL.Image")
_WORKER_MODULE = "rowforge.server.sandbox.worker"
#: The worker enforces every cell timeout itself; the pool only steps in if the worker hangs.
_WATCHDOG_GRACE_S = 10.0
#: Results larger than this are decoded and checked in a thread, off the event loop.
_INLINE_DECODE_BYTES = 256 * 1024
_STREAM_LIMIT = 1 << 20
_PROBE_TIMEOUT_S = 30.0
#: A pool's directory in ``work_dir``: ``run-<host>-<pid>-<random>``.
_RUN_RE = re.compile(rf"run-{leftovers.OWNER}-[A-Za-z0-9_]+")

_PROBE_CODE = """
import os
readable = []
for path in row["paths"]:
    try:
        if os.path.isdir(path):
            os.listdir(path)
        else:
            open(path, "rb").close()
        readable.append(path)
    except OSError:
        pass
import socket
network = []
for family in (socket.AF_UNIX, socket.AF_INET, socket.AF_INET6, socket.AF_NETLINK):
    try:
        probe = socket.socket(family, socket.SOCK_DGRAM)
    except OSError:
        continue
    with probe:
        network.append(f"open {family.name} sockets")
        if family in (socket.AF_INET, socket.AF_INET6):
            try:
                probe.bind(("127.0.0.1" if family == socket.AF_INET else "::1", 0))
                network.append(f"bind {family.name} sockets")
            except OSError:
                pass
row["probe"] = {"readable": readable, "network": network}
"""


@dataclass
class _Job:
    id: int
    column: str
    future: asyncio.Future[tuple[dict[str, Any], bytes | None]]


@dataclass
class _Worker:
    slot: int
    proc: WorkerProcess
    ready: dict[str, Any]
    job: _Job | None = None
    watcher: asyncio.Task[None] | None = field(default=None, repr=False)
    proxy: EgressProxy | None = field(default=None, repr=False)

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None and not self.proc.stdin.is_closing()

    def send(self, *chunks: bytes) -> None:
        for chunk in chunks:
            self.proc.stdin.write(chunk)

    def kill(self) -> None:
        self.proc.kill()

    def forget(self) -> None:
        if self.proxy is not None:
            self.proxy.abort()
        self.proc.close()


def _sweep_runs(work_dir: str, mine: str | None) -> int:
    removed = 0
    try:
        entries = list(os.scandir(work_dir))
    except FileNotFoundError:
        return 0
    for entry in entries:
        match = _RUN_RE.fullmatch(entry.name)
        if (match is None or entry.path == mine or not entry.is_dir(follow_symlinks=False)
                or not leftovers.owner_gone(match, starting=mine is None)):
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        removed += not os.path.exists(entry.path)
    return removed


async def _read_frame(stream: asyncio.StreamReader) -> bytes | None:
    try:
        head = await stream.readexactly(protocol.HEADER.size)
        (size,) = protocol.HEADER.unpack(head)
        return await stream.readexactly(size)
    except asyncio.IncompleteReadError:
        return None


class SandboxPool:
    """A pool of worker processes that run Python-column code, isolated from the server.

    Each worker pre-imports common libraries, then forks a fresh child per cell. The child
    starts a new session, takes the rlimits of :class:`SandboxLimits`, drops to an
    unprivileged uid of its own (when the server runs as root; its directory then lives on a
    capped tmpfs and ``/proc`` hides other processes), confines itself with Landlock
    when the kernel has it (read-only system and Python trees minus ``forbidden_paths``,
    read-write only in its private temporary directory, signals scoped to itself), and runs the
    code. The worker enforces the timeout and kills everything the cell started before it
    answers. Results come back as msgpack data and are checked before they are returned.

    Args:
        workers: Worker processes, i.e. cells that can run at the same time.
        limits: Per-cell limits.
        forbidden_paths: Paths cells must not read (the server's data directory). Excluded
            from the Landlock allow-list; :meth:`start` refuses to finish if a cell could
            still read one of them.
        preload: Modules each worker imports once (missing ones are skipped).
        sandbox_uid_base: Cells run as uids at or above this one (root only): the first block
            of ``workers`` uids that no account uses and no other server on the machine has
            claimed (:func:`identity.claim_uids`), one uid per worker slot.
        sandbox_gid: The gid cells run as (root only).
        landlock: Use Landlock when the kernel supports it.
        extra_read_paths: More trees cells may read (Landlock allow-list).
        start_timeout_s: How long a worker may take to start (imports included).
        network: ``off`` (cells have no network at all) or ``public`` (cells reach public
            addresses only, through the pool's egress proxy; needs a root server, else cells
            get ``off`` and a log line says so). Binding and listening are refused in both.
        egress_allow: Networks the egress proxy lets cells reach although they are not
            public. For tests only: this machine has no public address to fetch from.
        work_dir: Where the pool's directory (the cells' private directories) is made; the
            server passes ``<data_dir>/sandbox``, whose leftovers of crashed servers
            :meth:`sweep_leftovers` removes. Default: the system temporary directory.
    """

    def __init__(
        self,
        *,
        workers: int = 2,
        limits: SandboxLimits = SandboxLimits(),
        forbidden_paths: Sequence[str] = (),
        preload: Sequence[str] = DEFAULT_PRELOAD,
        sandbox_uid_base: int = identity.DEFAULT_UID_BASE,
        sandbox_gid: int = identity.DEFAULT_GID,
        landlock: bool = True,
        extra_read_paths: Sequence[str] = (),
        start_timeout_s: float = 60.0,
        network: str = "off",
        egress_allow: Sequence[str] = (),
        work_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, not {workers}")
        if network not in MODES:
            raise ValueError(f"network must be one of {', '.join(MODES)}, not {network!r}")
        self.network_requested = network
        self._egress = EgressPolicy(egress_allow)
        self.limits = limits
        self._size = workers
        self._forbidden = [os.path.abspath(p) for p in forbidden_paths]
        self._preload = list(preload)
        self._uid_base = sandbox_uid_base
        self._gid = sandbox_gid
        self._landlock = landlock
        self._extra_read = [os.path.abspath(p) for p in extra_read_paths]
        self._start_timeout = start_timeout_s
        self._workers: dict[int, _Worker] = {}
        self._idle: asyncio.Queue[_Worker | None] = asyncio.Queue()
        self._ids = itertools.count(1)
        self._respawns: set[asyncio.Task[None]] = set()
        self._cell_root: str | None = None
        self._work_dir = os.path.abspath(work_dir) if work_dir is not None else None
        self._uids: identity.UidClaim | None = None
        self._started = False
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the workers and check that ``forbidden_paths`` are out of the cells' reach.

        Raises:
            Internal: a worker could not start, or a cell could read a forbidden path.
        """
        if self._started:
            return
        self._started = True
        if os.geteuid() == 0:
            try:
                self._uids = identity.claim_uids(self._uid_base, self._size)
            except OSError as exc:
                self._closed = True
                raise Internal(f"the Python sandbox found no uids to run cells as: {exc}; "
                               "choose another sandbox_uid_base",
                               reason="SANDBOX_MISCONFIGURED") from None
        if self._work_dir is None:
            self._cell_root = tempfile.mkdtemp(prefix="rowforge-sandbox-")
        else:
            os.makedirs(self._work_dir, mode=0o700, exist_ok=True)
            await self.sweep_leftovers()
            self._cell_root = tempfile.mkdtemp(prefix=f"run-{leftovers.owner_tag()}-",
                                               dir=self._work_dir)
        # Cells run as other uids and must reach their own directory beneath this one.
        os.chmod(self._cell_root, 0o711 if os.geteuid() == 0 else 0o700)
        try:
            spawned = await asyncio.gather(*(self._spawn(slot) for slot in range(self._size)))
            for worker in spawned:
                self._adopt(worker)
            await self._probe_cells()
        except BaseException:
            await self.close()
            raise
        info = self.isolation
        if info.get("network_note"):
            log.warning("Python sandbox: %s", info["network_note"])
        log.info("Python sandbox started: %d workers, %s", self._size, info)

    async def close(self) -> None:
        """Stop the workers (a running cell is killed) and remove the temporary directories."""
        if self._closed:
            return
        self._closed = True
        self._idle.put_nowait(None)  # wakes a waiting run(), which passes it on
        for task in self._respawns:
            task.cancel()
        workers = list(self._workers.values())
        for worker in workers:
            if worker.proc.stdin is not None:
                worker.proc.stdin.close()  # EOF: the worker kills its cell and exits
        for worker in workers:
            try:
                await asyncio.wait_for(worker.proc.wait(), 5)
            except TimeoutError:
                worker.kill()
                await worker.proc.wait()
        for worker in workers:
            if worker.watcher is not None:
                await asyncio.gather(worker.watcher, return_exceptions=True)
            if worker.proxy is not None:
                await worker.proxy.close()
        await asyncio.gather(*self._respawns, return_exceptions=True)
        if self._cell_root is not None:
            shutil.rmtree(self._cell_root, ignore_errors=True)
        if self._uids is not None:
            self._uids.release()  # after the workers (and so their cells) are gone

    async def sweep_leftovers(self) -> int:
        """Remove the directories crashed pools left in ``work_dir`` (their process is gone);
        returns how many. Safe to call at any time: a live pool's directory stays."""
        if self._work_dir is None:
            return 0
        removed = await asyncio.to_thread(_sweep_runs, self._work_dir, self._cell_root)
        if removed:
            log.info("removed %d Python sandbox directories left by crashed servers", removed)
        return removed

    async def __aenter__(self) -> SandboxPool:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def worker_pids(self) -> list[int]:
        """Pids of the live worker processes (for monitoring and tests)."""
        return [w.proc.pid for w in self._workers.values() if w.alive]

    @property
    def sandbox_uids(self) -> list[int]:
        """The uids cells run as (empty when the server is not root and cells keep its uid)."""
        if os.geteuid() != 0:
            return []
        return list(self._uids.uids) if self._uids is not None else []

    def _slot_uid(self, slot: int) -> int:
        return self._uids.uids[slot] if self._uids is not None else self._uid_base + slot

    @property
    def network(self) -> str:
        """The network mode cells really get (``public`` may have degraded to ``off``)."""
        return str(self.isolation.get("network", "off"))

    @property
    def isolation(self) -> dict[str, Any]:
        """What confines the cells here: privilege drop, Landlock ABI, exposed paths, ..."""
        for worker in self._workers.values():
            return {k: v for k, v in worker.ready.items() if k not in ("t", "pid", "uid")}
        return {}

    # -- running cells ---------------------------------------------------------------------

    async def run(self, code: str, row: dict[str, Any], column: str, *,
                  timeout_s: float | None = None) -> Any:
        """Run ``code`` with ``row`` and return the value it assigned to ``row[column]``.

        Args:
            code: The column's Python code; it reads and writes the dict ``row``.
            row: Upstream values, unwrapped (``bytes`` for file/image/audio columns).
            column: This column's name.
            timeout_s: Wall-clock limit for this cell (default: ``limits.timeout_s``).

        Returns:
            str, int, float, bool, None, bytes, or lists/dicts of these.

        Raises:
            SandboxError: the cell failed (timeout, memory, exit, ...): data for the cell.
            InvalidArgument: bad arguments (not a cell failure).
            Unavailable: the pool is not running.
        """
        if not self._started or self._closed:
            raise Unavailable("the Python sandbox is not running")
        timeout = self._check_args(code, row, column, timeout_s)
        payload = pack_job(code, row)
        job_id = next(self._ids)
        header = {"t": "run", "id": job_id, "column": column, "timeout_s": timeout,
                  "limits": self.limits.to_wire()}
        worker = await self._acquire()
        future: asyncio.Future[tuple[dict[str, Any], bytes | None]] = (
            asyncio.get_running_loop().create_future())
        worker.job = _Job(job_id, column, future)
        body = protocol.pack(header)
        worker.send(body, protocol.HEADER.pack(len(payload)), payload)
        try:
            async with asyncio.timeout(timeout + _WATCHDOG_GRACE_S):
                message, frame = await asyncio.shield(future)
        except TimeoutError:
            log.error("sandbox worker %d did not answer in time; replacing it", worker.proc.pid)
            future.cancel()
            worker.kill()
            raise SandboxError("timeout", f"Python column {column!r} timed out after "
                               f"{timeout:g} s") from None
        except asyncio.CancelledError:
            if not future.done():
                # The worker kills the cell and answers "cancelled"; its watcher then puts it
                # back in the pool.
                if worker.alive:
                    worker.send(protocol.pack({"t": "cancel", "id": job_id}))
                future.cancel()
            raise
        if message["t"] == "error":
            kind = message.get("kind")
            raise SandboxError(kind if kind in KINDS else "crashed", str(message.get("message")))
        assert frame is not None
        if len(frame) > _INLINE_DECODE_BYTES:
            return await asyncio.to_thread(decode_result, frame, column)
        return decode_result(frame, column)

    def _check_args(self, code: object, row: object, column: object,
                    timeout_s: float | None) -> float:
        if not isinstance(code, str):
            raise InvalidArgument.field("code", "must be a string")
        if not isinstance(column, str) or not column:
            raise InvalidArgument.field("column", "must be a non-empty string")
        if not isinstance(row, dict):
            raise InvalidArgument.field("row", "must be a dict of column name to value")
        if timeout_s is None:
            return self.limits.timeout_s
        if not (isinstance(timeout_s, int | float) and math.isfinite(timeout_s)
                and timeout_s > 0):
            raise InvalidArgument.field("timeout_s", "must be a positive number of seconds")
        return float(timeout_s)

    async def _acquire(self) -> _Worker:
        while True:
            worker = await self._idle.get()
            if worker is None:
                self._idle.put_nowait(None)
                raise Unavailable("the Python sandbox is shutting down")
            if worker.alive and worker.job is None:
                return worker

    # -- workers ---------------------------------------------------------------------------

    async def _spawn(self, slot: int) -> _Worker:
        assert self._cell_root is not None
        config = {"slot": slot, "uid": self._slot_uid(slot), "gid": self._gid,
                  "cell_root": self._cell_root, "preload": self._preload,
                  "landlock": self._landlock, "forbidden": self._forbidden,
                  "limits": self.limits.to_wire(),
                  "extra_read_paths": self._extra_read, "network": self.network_requested}
        # The worker hands the listening socket of its namespace to the egress proxy here.
        channel, worker_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            config["egress_fd"] = worker_end.fileno()
            proc = await WorkerProcess.start(
                [sys.executable, "-I", "-m", _WORKER_MODULE],
                env=scrubbed_environment(self._cell_root), cwd=self._cell_root,
                limit=_STREAM_LIMIT, pass_fds=(worker_end.fileno(),))
        except BaseException:
            channel.close()
            raise
        finally:
            worker_end.close()
        worker = _Worker(slot, proc, {})
        try:
            proc.stdin.write(protocol.pack(config))
            async with asyncio.timeout(self._start_timeout):
                body = await _read_frame(proc.stdout)
            ready = protocol.unpack(body) if body is not None else {}
            if ready.get("t") != "ready":
                reason = ready.get("message") or "it exited during start-up"
                raise Internal(f"a Python sandbox worker failed to start: {reason}",
                               reason="SANDBOX_MISCONFIGURED")
            if ready.get("network") == "public":
                worker.proxy = await self._start_proxy(channel)
        except BaseException:
            worker.kill()
            await proc.wait()
            worker.forget()
            raise
        finally:
            channel.close()
        worker.ready = ready
        return worker

    async def _start_proxy(self, channel: socket.socket) -> EgressProxy:
        """Serve the listening socket the worker opened in its network namespace."""
        channel.setblocking(False)  # sent before "ready": already waiting if it was sent
        try:
            _, fds, _, _ = socket.recv_fds(channel, 1, 1)
        except BlockingIOError:
            fds = []
        if len(fds) != 1:
            raise Internal("a Python sandbox worker did not hand over its egress socket",
                           reason="SANDBOX_MISCONFIGURED")
        proxy = EgressProxy(self._egress)
        await proxy.start(socket.socket(fileno=fds[0]))
        return proxy

    def _adopt(self, worker: _Worker) -> None:
        self._workers[worker.slot] = worker
        worker.watcher = asyncio.create_task(self._watch(worker),
                                             name=f"sandbox-worker-{worker.slot}")
        self._release(worker)

    def _release(self, worker: _Worker) -> None:
        if not self._closed and worker.alive:
            self._idle.put_nowait(worker)

    async def _watch(self, worker: _Worker) -> None:
        """Deliver the worker's answers; replace the worker when it dies."""
        assert worker.proc.stdout is not None
        stream = worker.proc.stdout
        try:
            while True:
                body = await _read_frame(stream)
                if body is None:
                    break
                message = protocol.unpack(body)
                frame = await _read_frame(stream) if message.get("t") == "result" else None
                if message.get("t") == "result" and frame is None:
                    break
                job, worker.job = worker.job, None
                if job is not None and job.id == message.get("id") and not job.future.done():
                    job.future.set_result((message, frame))
                self._release(worker)
        except Exception:
            log.exception("sandbox worker %d sent something unreadable", worker.proc.pid)
            worker.kill()
        # A worker closes its stdout only when it exits.
        try:
            await asyncio.wait_for(worker.proc.wait(), 5)
        except TimeoutError:
            worker.kill()
            await worker.proc.wait()
        worker.forget()
        job, worker.job = worker.job, None
        if job is not None and not job.future.done():
            if self._closed:
                job.future.set_exception(Unavailable("the Python sandbox shut down"))
            else:
                job.future.set_exception(SandboxError(
                    "crashed", f"Python column {job.column!r} crashed its sandbox worker"))
        if not self._closed:
            log.warning("sandbox worker %d exited (%s); starting a new one",
                        worker.proc.pid, worker.proc.returncode)
            task = asyncio.create_task(self._respawn(worker.slot))
            self._respawns.add(task)
            task.add_done_callback(self._respawns.discard)

    async def _respawn(self, slot: int) -> None:
        delay = 0.1
        while not self._closed:
            try:
                worker = await self._spawn(slot)
            except Exception:
                log.exception("could not restart sandbox worker slot %d", slot)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            if self._closed:
                worker.kill()
                await worker.proc.wait()
                worker.forget()
                return
            self._adopt(worker)
            return

    async def _probe_cells(self) -> None:
        """Run one probe cell per worker: it proves cells work, and finds readable paths."""
        try:
            results = await asyncio.gather(*(
                self.run(_PROBE_CODE, {"paths": self._forbidden}, "probe",
                         timeout_s=max(self.limits.timeout_s, _PROBE_TIMEOUT_S))
                for _ in range(self._size)))
        except SandboxError as exc:
            raise Internal(f"the Python sandbox cannot run cells: {exc.message}",
                           reason="SANDBOX_MISCONFIGURED") from None
        readable = sorted({path for found in results for path in found["readable"]})
        network = sorted({what for found in results for what in found["network"]})
        if self.network == "public":  # public: IP sockets, but only inside the namespace
            network = [what for what in network if what.startswith("bind")
                       or "AF_UNIX" in what or "AF_NETLINK" in what]
        if network:
            raise Internal(
                f"Python cells could {', '.join(network)}, which the sandbox network policy "
                f"({self.network}) forbids; the kernel did not apply the seccomp filter",
                reason="SANDBOX_MISCONFIGURED")
        if readable:
            raise Internal(
                f"Python cells could read {', '.join(readable)}, which must stay private; run the "
                "server as root (cells then drop to an unprivileged uid) with the data directory "
                "mode 0700, or on Linux >= 5.13 with Landlock enabled",
                reason="SANDBOX_MISCONFIGURED")
