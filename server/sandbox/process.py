"""A sandbox worker's process: started by ``subprocess.Popen``, watched by the running loop.

``asyncio.create_subprocess_exec`` is not used: under uvloop it forks through libuv and runs
the interpreter's at-fork handlers in the child while gRPC's threads are running, and about
one child in ten died of SIGSEGV before it reached ``exec`` (seen on a root server with two
servers starting workers at once; the pool then failed with ``ProcessLookupError`` when it
opened the dead child's pidfd). ``Popen`` without ``preexec_fn`` forks with ``vfork`` and runs
no Python in the child, on any loop. The pipes are handed to the loop as streams and the exit
is seen through a pidfd, so no child watcher is involved either.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence


class WorkerProcess:
    """A child process with asyncio streams on its stdin/stdout (see the module docstring)."""

    def __init__(self, popen: subprocess.Popen[bytes], pidfd: int,
                 stdin: asyncio.StreamWriter, stdout: asyncio.StreamReader) -> None:
        self._popen = popen
        self._pidfd = pidfd
        self.stdin = stdin
        self.stdout = stdout
        self._exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().add_reader(pidfd, self._on_exit)

    @classmethod
    async def start(cls, args: Sequence[str], *, env: Mapping[str, str], cwd: str,
                    pass_fds: Sequence[int], limit: int) -> WorkerProcess:
        """Start ``args`` in a new session with piped stdin/stdout (stderr inherited)."""
        loop = asyncio.get_running_loop()
        # vfork + exec: returns at once (asyncio's own subprocess support calls Popen too).
        popen = subprocess.Popen(  # noqa: ASYNC220
            list(args), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            env=dict(env), cwd=cwd, start_new_session=True, pass_fds=tuple(pass_fds))
        assert popen.stdin is not None and popen.stdout is not None
        # Popen reaps only in poll()/wait(), so the pid is still this child's (at worst a zombie).
        pidfd = os.pidfd_open(popen.pid)
        try:
            reader = asyncio.StreamReader(limit=limit)
            await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader),
                                         popen.stdout)
            transport, protocol = await loop.connect_write_pipe(
                asyncio.streams.FlowControlMixin, popen.stdin)
            writer = asyncio.StreamWriter(transport, protocol, None, loop)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            popen.wait()
            os.close(pidfd)
            raise
        return cls(popen, pidfd, writer, reader)

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def returncode(self) -> int | None:
        """The exit status once the process is gone (negative: killed by that signal)."""
        return self._exited.result() if self._exited.done() else None

    async def wait(self) -> int:
        """Wait for the process to exit; returns its exit status."""
        return await asyncio.shield(self._exited)

    def kill(self) -> None:
        """SIGKILL it through the pidfd (a bare pid could have been recycled)."""
        if self._pidfd >= 0:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)

    def close(self) -> None:
        """Give up the pidfd (after the process exited, or to stop watching it)."""
        if self._pidfd >= 0:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1

    def _on_exit(self) -> None:
        asyncio.get_running_loop().remove_reader(self._pidfd)
        code = self._popen.wait()  # it has exited: this only reaps
        if not self._exited.done():
            self._exited.set_result(code)
