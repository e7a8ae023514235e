"""The README's shell blocks run exactly as written, in the state a user has after its two
commands: `make serve`'s server on 127.0.0.1:50051 (same command line), a second terminal at
the repository root, nothing on PATH but what the README itself sets up.

Every ```bash block runs, in order, as one shell session (`bash -euo pipefail`), except a block
preceded by a ``<!-- readme-test: skip (reason) -->`` line. Sections added later are covered
automatically: a new block either runs as written or carries the marker with its reason.

The run happens in a fresh network namespace (``unshare -n``): port 50051 is free there whatever
else runs on this machine, and nothing can reach the network, so the README is proven offline.
The repository is mirrored by symlinks into a temporary directory so the files the blocks write
(notes.txt, data/ ...) land there.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import signal
import subprocess
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
SKIP = re.compile(r"<!-- readme-test: skip \((?P<reason>[^)]+)\) -->\s*$")
FENCE = re.compile(r"^```(?P<lang>\w*)\s*$")
#: What `make serve` runs (Makefile: serve), from the repository root.
MAKE_SERVE = ".venv/bin/rowforge serve --host 127.0.0.1 --port 50051 --data-dir data"


def blocks(text: str) -> list[tuple[str, str, str | None]]:
    """``(language, code, skip reason)`` of every fenced block, in order."""
    found: list[tuple[str, str, str | None]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if match and match.group("lang"):
            previous = next((ln for ln in reversed(lines[:i]) if ln.strip()), "")
            skip = SKIP.match(previous.strip())
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            found.append((match.group("lang"), "\n".join(lines[i + 1:end]) + "\n",
                          skip.group("reason") if skip else None))
            i = end
        i += 1
    return found


def test_skip_markers_give_a_reason_and_mark_a_block() -> None:
    text = README.read_text()
    markers = [ln for ln in text.splitlines() if "<!-- readme-test" in ln]
    assert markers, "the README marks its two commands as skipped"
    for line in markers:
        assert SKIP.match(line.strip()), f"malformed marker: {line}"
    skipped = [b for b in blocks(text) if b[2]]
    assert len(skipped) == len(markers), "a marker is not right above a fenced block"
    assert any("make serve" in code for _, code, _ in skipped)


def test_python_blocks_are_valid_python() -> None:
    for lang, code, _ in blocks(README.read_text()):
        if lang == "python":
            ast.parse(textwrap.dedent(code))


def _user_env() -> dict[str, str]:
    """The environment of a fresh terminal: no venv, no rowforge settings."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ROWFORGE_", "JAMAI_", "AJAXAI_", "PYTEST_", "VIRTUAL_ENV"))}
    keep = [p for p in env.get("PATH", "").split(os.pathsep)
            if p and ".venv" not in p and "node_modules" not in p]
    env["PATH"] = os.pathsep.join(keep or ["/usr/local/bin", "/usr/bin", "/bin"])
    env.pop("PYTHONPATH", None)
    return env


def _can_unshare() -> str | None:
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    args = ["unshare", "-n", "true"] if os.geteuid() == 0 else ["unshare", "-rn", "true"]
    probe = subprocess.run(args, capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot make a network namespace: {probe.stderr.strip()}"
    return None


def _mirror(dest: Path) -> Path:
    """The repository as a user has it, files written by the blocks kept apart."""
    repo = dest / "rowforge"
    repo.mkdir()
    for entry in ROOT.iterdir():
        if entry.name in {"data", ".git"} or entry.name.startswith("data-"):
            continue
        (repo / entry.name).symlink_to(entry)
    return repo


def test_readme_shell_blocks_run_as_written(tmp_path: Path) -> None:
    for needed in (ROOT / ".venv/bin/rowforge", ROOT / ".venv/bin/grpcurl",
                   ROOT / ".venv/bin/buf"):
        if not needed.exists():
            pytest.skip(f"{needed.relative_to(ROOT)} is missing: run `make serve` / `make test` "
                        "first (the README's two commands)")
    reason = _can_unshare() or (None if shutil.which("jq") else "jq is not installed")
    if reason:
        print(f"SKIPPED README blocks: {reason}")
        pytest.skip(reason)
    runnable = [code for lang, code, skip in blocks(README.read_text())
                if lang == "bash" and skip is None]
    assert len(runnable) >= 10
    repo = _mirror(tmp_path)
    (tmp_path / "readme.sh").write_text("\n".join(runnable))
    # Inside the namespace: loopback up, `make serve`'s server, then the README in a new shell.
    driver = f"""
set -eu
ip link set lo up
{MAKE_SERVE} > serve.log 2>&1 &
SERVER=$!
for _ in $(seq 600); do grep -q "rowforge listening" serve.log && break; sleep 0.2; done
grep -q "rowforge listening" serve.log || {{ cat serve.log; exit 97; }}
set +e
bash -euo pipefail {tmp_path / "readme.sh"}
status=$?
kill $SERVER
wait $SERVER
exit $status
"""
    unshare = ["unshare", "-n"] if os.geteuid() == 0 else ["unshare", "-rn"]
    proc = subprocess.Popen([*unshare, "bash", "-c", driver], cwd=repo, env=_user_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=900)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # background servers a failed block left
        except ProcessLookupError:
            pass
    log = (repo / "serve.log").read_text() if (repo / "serve.log").exists() else ""
    assert proc.returncode == 0, (f"exit {proc.returncode}\n--- stderr\n{err[-4000:]}\n"
                                  f"--- stdout\n{out[-2000:]}\n--- server\n{log[-2000:]}")
    # A few answers that prove the blocks did their work, not just exited 0.
    assert "rowforge.v1.TableService" in out and '"status": "SERVING"' in out
    assert "created action table 'cli_qa'" in out
    assert (repo / "downloads" / "notes.txt").read_text().startswith("Rowforge listens")
    assert len((repo / "results.jsonl").read_text().splitlines()) == 2
    assert "rowforge/chat" in out                       # the authenticated models list
