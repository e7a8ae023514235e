"""`rowforge serve` start-up failures: one line on stderr naming the file/key/port and the fix,
exit code 2 for a configuration mistake, 1 for a runtime failure; never a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest


def _rowforge(*args: str, cwd: Path, env: dict[str, str] | None = None,
              timeout: float = 90) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("ROWFORGE_")}
    base.update(env or {})
    # The console script, as a user runs it (same code path as `python -m rowforge.server`).
    cmd = [sys.executable, "-m", "rowforge.clients.cli", *args]
    return subprocess.run(cmd, cwd=cwd, env=base, capture_output=True, text=True,
                          timeout=timeout)


def _one_line(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("rowforge: ")
    return lines[0]


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_port_in_use_names_port_and_flag(tmp_path: Path, taken_port: int) -> None:
    line = _one_line(_rowforge("serve", "--port", str(taken_port), "--data-dir", "d",
                               cwd=tmp_path), 1)
    assert f"cannot listen on 127.0.0.1:{taken_port}" in line and "--port" in line


@pytest.mark.parametrize(("toml", "expected"), [
    ("prot = 50052\n", "typo.toml: unknown setting 'prot' (did you mean 'port'?)"),
    ("[[models]]\nid = 'openai/gpt-5.2'\nroute = 'builtin/chat'\ncapabilities = ['chat']\n",
     'typo.toml: models[0] (openai/gpt-5.2): route: Value error, routes starting with '
     "'builtin/' are reserved for the built-in models; to serve this id with one, write "
     'alias_of = "rowforge/chat" instead of route'),
    ("[[models]]\nid = 'x'\nroute = 'openai/x'\ncapabilitys = ['chat']\n",
     "capabilitys: Extra inputs are not permitted (did you mean 'capabilities'?)"),
    ("port = [\n", "typo.toml: not valid TOML"),
])
def test_bad_config_file(tmp_path: Path, toml: str, expected: str) -> None:
    (tmp_path / "typo.toml").write_text(toml)
    line = _one_line(_rowforge("serve", "--config", "typo.toml", "--port", "0",
                               cwd=tmp_path), 2)
    assert line.startswith("rowforge: config error: ") and expected in line


@pytest.mark.parametrize(("args", "env", "expected"), [
    (["--config", "missing.toml"], {}, "missing.toml: no such config file"),
    ([], {"ROWFORGE_PORT": "fifty"}, "ROWFORGE_PORT: port: expected an integer, got 'fifty'"),
    ([], {"ROWFORGE_MODELS": "[{"}, "ROWFORGE_MODELS: models: not valid JSON"),
    (["--host", "0.0.0.0"], {}, "refusing to listen on 0.0.0.0 with auth off: enable auth "
                                "(--auth or ROWFORGE_AUTH=true) or pass --insecure"),
])
def test_bad_settings_elsewhere(tmp_path: Path, args: list[str], env: dict[str, str],
                                expected: str) -> None:
    line = _one_line(_rowforge("serve", "--port", "0", "--data-dir", "d", *args, cwd=tmp_path,
                               env=env), 2)
    assert expected in line


def test_unreachable_database(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    line = _one_line(_rowforge("serve", "--port", "0", "--data-dir", "d", "--database-url",
                               f"postgresql+asyncpg://rowforge@127.0.0.1:{port}/db",
                               cwd=tmp_path), 1)
    assert "cannot reach the database" in line and "ROWFORGE_DATABASE_URL" in line


def test_admin_commands_share_the_one_line_errors(tmp_path: Path) -> None:
    (tmp_path / "typo.toml").write_text("data_dri = 'x'\n")
    line = _one_line(_rowforge("admin", "--config", "typo.toml", "create-project", "p",
                               cwd=tmp_path), 2)
    assert "unknown setting 'data_dri' (did you mean 'data_dir'?)" in line
    line = _one_line(_rowforge("admin", "--data-dir", "d", "create-token", "--project", "nope",
                               cwd=tmp_path), 2)
    assert "nope" in line
