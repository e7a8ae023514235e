"""Progress output of `rowforge batch`: plain lines without a terminal (no per-item noise,
states never going backwards, a real duration), a tqdm bar on a terminal that moves as the
server acknowledges the requests."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import termios
from pathlib import Path

from tests.integration.test_cli import ROWFORGE, rowforge
from tests.support.server import ServerProcess

ORDER = ["created", "populating", "ready", "processing", "succeeded"]


def _requests(path: Path, n: int) -> None:
    path.write_text("".join(json.dumps({"request_id": f"r{i}", "text": f"Say {i}"}) + "\n"
                            for i in range(n)))


def test_plain_output_without_a_terminal(server: ServerProcess, tmp_path: Path) -> None:
    _requests(tmp_path / "req.jsonl", 250)
    created = rowforge(server, "batch", "create", "req.jsonl", "--watch", cwd=tmp_path)
    lines = created.stderr.splitlines()
    adding = [ln for ln in lines if ln.startswith("adding requests")]
    assert 1 <= len(adding) <= 3 and adding[-1].startswith("adding requests: 250/250"), lines
    states = [m.group(1) for ln in lines
              if (m := re.match(r"job \S+: \d+(?:/\d+)? req \((\w+)", ln))]
    assert states and states[-1] == "succeeded", lines
    ranks = [ORDER.index(s) for s in states]
    assert ranks == sorted(ranks), f"states went backwards: {states}"
    summary = created.stdout.strip().splitlines()[-1]
    seconds = float(re.search(r", ([\d.]+)s$", summary).group(1))  # type: ignore[union-attr]
    assert "250 succeeded" in summary and seconds > 0, summary
    job_id = created.stdout.split()[1]
    results = rowforge(server, "batch", "results", job_id, "-o", "out.jsonl", cwd=tmp_path)
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 250
    assert len(results.stderr.splitlines()) <= 3, results.stderr  # not one line per result


def test_terminal_bar_moves_as_requests_are_acknowledged(server: ServerProcess,
                                                        tmp_path: Path) -> None:
    _requests(tmp_path / "req.jsonl", 1500)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROWFORGE_")}
    env["ROWFORGE_ADDRESS"] = server.address
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    proc = subprocess.Popen([*ROWFORGE, "batch", "create", "req.jsonl"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=slave, text=True)
    os.close(slave)
    screen = b""
    while True:
        ready, _, _ = select.select([master], [], [], 60)
        if not ready:
            break
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the child closed its end
            break
        if not chunk:
            break
        screen += chunk
    proc.wait(60)
    os.close(master)
    text = screen.decode(errors="replace")
    assert proc.returncode == 0, text
    shown = {int(n) for n in re.findall(r"(\d+)/1500", text)}
    # At least one count between 0 and the end: the bar moved with the acknowledgements
    # (tqdm redraws at most every 0.1 s, and 1,500 requests may take under 0.2 s to add).
    assert 1500 in shown and shown - {0, 1500}, f"the bar jumped: {sorted(shown)} {text!r}"
