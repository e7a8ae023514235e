"""Start a real rowforge server in a subprocess on a free loopback port."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LISTENING = re.compile(r"rowforge listening on (?P<host>[^\s:]+|\[[^\]]+\]):(?P<port>\d+)")


@dataclass
class ServerProcess:
    """A ``rowforge serve`` subprocess. Use :meth:`start`, then ``address``."""

    data_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)
    port: int = 0
    process: subprocess.Popen[str] | None = None
    output: list[str] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> ServerProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ROWFORGE_")}
        env.update({"ROWFORGE_LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1"})
        env.update(self.env)
        # The client's tests also run in .venv-min (oldest protobuf/grpcio, no server extra):
        # there the server runs from the main venv's interpreter.
        python = os.environ.get("ROWFORGE_TEST_SERVER_PYTHON") or sys.executable
        cmd = [python, "-m", "rowforge.server", "serve", "--host", "127.0.0.1",
               "--port", str(self.port), "--data-dir", str(self.data_dir), *self.args]
        self.process = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        found = threading.Event()

        def pump() -> None:
            assert self.process and self.process.stdout
            for line in self.process.stdout:
                self.output.append(line)
                match = LISTENING.search(line)
                if match and not found.is_set():
                    self.port = int(match.group("port"))
                    found.set()

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not found.wait(0.05):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError("server did not start:\n" + "".join(self.output[-50:]))
        return self

    def logs(self) -> list[dict[str, Any]]:
        entries = []
        for line in self.output:
            try:
                entries.append(json.loads(line))
            except ValueError:
                continue
        return entries

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def __enter__(self) -> ServerProcess:
        return self.start() if self.process is None else self

    def __exit__(self, *exc: object) -> None:
        try:
            self.terminate()
        finally:
            self.kill()
