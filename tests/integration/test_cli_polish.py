"""The command line's manners: --version, shell completion, quiet under `| head`, JSON errors
with --json, exit 2 for INVALID_ARGUMENT from the server too, no progress bar left under an
error; against a real server, in subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rowforge.clients import __version__
from rowforge.clients._cli_output import Progress, abandon_progress
from tests.support.server import ServerProcess

ROWFORGE = [sys.executable, "-m", "rowforge.clients.cli"]


def run(*args: str, address: str = "127.0.0.1:9", **kw: object
        ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROWFORGE_")}
    env["ROWFORGE_ADDRESS"] = address
    env.update(kw.pop("env", {}))  # type: ignore[arg-type]
    return subprocess.run([*ROWFORGE, *args], env=env, capture_output=True, text=True,
                          timeout=90, **kw)  # type: ignore[call-overload]


def test_version() -> None:
    result = run("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"rowforge {__version__}"


def test_shell_completion(tmp_path: Path) -> None:
    pytest.importorskip("argcomplete", reason="argcomplete (client extra) is not installed")
    out = tmp_path / "completions"
    line = "rowforge tables ad"
    result = run(env={"_ARGCOMPLETE": "1", "COMP_LINE": line, "COMP_POINT": str(len(line)),
                      "_ARGCOMPLETE_STDOUT_FILENAME": str(out), "_ARGCOMPLETE_IFS": "\n"})
    assert result.returncode == 0, result.stderr
    assert out.read_text().split() == ["add-rows"]


@pytest.fixture(scope="module")
def pipe_table(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> str:
    schema = tmp_path_factory.mktemp("cli") / "schema.json"
    schema.write_text('{"id": "pipe_t", "cols": [{"id": "q"}]}')
    create = run("tables", "create", str(schema), "--type", "action", address=server.address)
    assert create.returncode == 0, create.stderr
    return "pipe_t"


def test_head_closing_the_pipe_is_quiet(server: ServerProcess, pipe_table: str,
                                        tmp_path: Path) -> None:
    (tmp_path / "rows.csv").write_text(
        "q\n" + "".join(f"line {i} {'x' * 200}\n" for i in range(300)))
    added = run("tables", "add-rows", "action", "pipe_t", str(tmp_path / "rows.csv"), "--json",
                address=server.address)
    assert added.returncode == 0, added.stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROWFORGE_")}
    env["ROWFORGE_ADDRESS"] = server.address
    cmd = " ".join(ROWFORGE) + " tables rows action pipe_t --all --json | head -n 2"
    result = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], env=env, capture_output=True,
                            text=True, timeout=90)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 2
    assert result.stderr == ""  # no BrokenPipeError traceback


def test_json_errors_are_json_on_stderr(server: ServerProcess) -> None:
    result = run("tables", "get", "action", "no_such_table", "--json", address=server.address)
    assert result.returncode == 1 and result.stdout == ""
    error = json.loads(result.stderr)["error"]
    assert error["code"] == "NOT_FOUND" and error["reason"] == "TABLE_NOT_FOUND"
    usage = run("tables", "get", "nonsense-type", "t", "--json")
    assert usage.returncode == 2
    assert json.loads(usage.stderr)["error"]["code"] == "USAGE"


def test_server_invalid_argument_exits_2(server: ServerProcess, pipe_table: str) -> None:
    result = run("tables", "rows", "action", "pipe_t", "--where", '"q" >',
                 address=server.address)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("rowforge: ") and "has nothing on its right" in result.stderr
    as_json = run("tables", "rows", "action", "pipe_t", "--where", '"q" >', "--json",
                  address=server.address)
    assert as_json.returncode == 2
    error = json.loads(as_json.stderr)["error"]
    assert error["code"] == "INVALID_ARGUMENT" and error["fieldViolations"][0]["field"] == "where"


def test_open_progress_bars_are_taken_down_before_an_error() -> None:
    bar = Progress(10, "uploading", "B")
    bar.update_to(3)
    assert bar in Progress.active
    abandon_progress()
    assert not Progress.active
    quiet = Progress(10, "quiet", quiet=True)
    assert quiet not in Progress.active


def test_add_rows_shows_generation_progress(server: ServerProcess, tmp_path: Path) -> None:
    (tmp_path / "schema.json").write_text(json.dumps({"id": "progress_t", "cols": [
        {"id": "q"}, {"id": "a", "gen_config": {"prompt": "Say ${q}", "max_tokens": 10}}]}))
    assert run("tables", "create", str(tmp_path / "schema.json"), "--type", "action",
               address=server.address).returncode == 0
    (tmp_path / "rows.csv").write_text("q\n" + "".join(f"row {i}\n" for i in range(150)))
    result = run("tables", "add-rows", "action", "progress_t", str(tmp_path / "rows.csv"),
                 address=server.address)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "added 150 rows to 'progress_t'"
    lines = [x for x in result.stderr.splitlines() if x.startswith("generating: ")]
    assert lines and lines[-1].startswith("generating: 150/150 row, ") and "row/s" in lines[-1]
    assert any(x.startswith("uploading rows.csv") for x in result.stderr.splitlines())
    rows = run("tables", "rows", "action", "progress_t", "--all", "--json",
               address=server.address)
    answers = [json.loads(x)["a"] for x in rows.stdout.splitlines()]
    assert len(answers) == 150 and all(answers)  # every row generated
