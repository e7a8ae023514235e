"""The ``rowforge`` command, invoked for real (subprocesses) against a real server."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.server import ServerProcess

ROWFORGE = [sys.executable, "-m", "rowforge.clients.cli"]


def rowforge(server: ServerProcess, *args: str, ok: bool = True, stdin: str | None = None,
             cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROWFORGE_")}
    env["ROWFORGE_ADDRESS"] = server.address
    result = subprocess.run([*ROWFORGE, *args], env=env, capture_output=True, text=True,
                            input=stdin, timeout=90, cwd=cwd)
    if ok:
        assert result.returncode == 0, f"rowforge {args} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("cli")
    (d / "schema.json").write_text(json.dumps({"id": "cli_qa", "cols": [
        {"id": "question"}, {"id": "n", "dtype": "int"},
        {"id": "answer", "gen_config": {"model": "rowforge/chat", "prompt": "Answer: ${question}",
                                        "max_tokens": 30}}]}))
    (d / "schema.yaml").write_text("table_type: action\nid: cli_yaml\ncols:\n  - id: text\n")
    (d / "rows.csv").write_text("question,n\nWhat is rowforge?,1\nWhy gRPC?,2\n\"Commas, ok?\",3\n")
    (d / "requests.jsonl").write_text(
        '{"request_id": "r1", "text": "Say hello"}\n'
        '{"text": "Say goodbye", "metadata": {"batch": "cli"}}\n'
        '{"request_id": "r3", "text": "Give JSON", "output_schema": {"type": "object", '
        '"properties": {"word": {"type": "string"}}, "required": ["word"]}}\n')
    return d


def test_help_lists_client_and_server_commands(server: ServerProcess) -> None:
    out = rowforge(server, "--help").stdout
    for command in ("serve", "admin", "tables", "files", "models", "chat", "batch"):
        assert command in out


def test_console_script(server: ServerProcess) -> None:
    script = Path(sys.executable).parent / "rowforge"
    if not script.exists():
        pytest.skip(f"no console script at {script} (package not installed with pip)")
    result = subprocess.run([str(script), "--address", server.address, "models", "list",
                             "--json"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "rowforge/chat" in {m["id"] for m in json.loads(result.stdout)}


def test_tables_flow(server: ServerProcess, workdir: Path) -> None:
    out = rowforge(server, "tables", "create", str(workdir / "schema.json"), "--type",
                   "action").stdout
    assert "created action table 'cli_qa' with 3 columns" in out
    assert "cli_yaml" in rowforge(server, "tables", "create", str(workdir / "schema.yaml")).stdout

    listed = json.loads(rowforge(server, "tables", "list", "--count", "--json").stdout)
    assert {t["id"]: t["num_rows"] for t in listed} == {"cli_qa": 0, "cli_yaml": 0}
    schema = rowforge(server, "tables", "get", "action", "cli_qa").stdout
    assert "llm rowforge/chat: Answer: ${question}" in schema

    added = rowforge(server, "tables", "add-rows", "action", "cli_qa",
                     str(workdir / "rows.csv")).stdout
    assert "added 3 rows to 'cli_qa'" in added

    human = rowforge(server, "tables", "rows", "action", "cli_qa")
    assert human.stdout.splitlines()[0].split() == ["ID", "question", "n", "answer"]
    assert "(3 of 3 rows)" in human.stderr
    lines = rowforge(server, "--json", "tables", "rows", "action", "cli_qa", "--where",
                     '"n" >= 2', "--columns", "question,n").stdout.splitlines()
    rows = [json.loads(line) for line in lines]
    assert [(r["question"], r["n"]) for r in rows] == [("Why gRPC?", 2), ("Commas, ok?", 3)]
    assert set(rows[0]) == {"ID", "Updated at", "question", "n"}

    every = rowforge(server, "tables", "rows", "action", "cli_qa", "--all", "--json")
    assert len(every.stdout.splitlines()) == 3

    exported = workdir / "export.csv"
    rowforge(server, "tables", "export", "action", "cli_qa", "-o", str(exported))
    text = exported.read_text()
    assert text.splitlines()[0] == "ID,Updated at,question,n,answer"
    assert '"Commas, ok?",3,' in text
    assert not (workdir / "export.csv.part").exists()
    # A formula is neutralised (leading ') unless --raw.
    (workdir / "formula.csv").write_text('question,n\n"=HYPERLINK(""http://x"")",4\n')
    rowforge(server, "tables", "add-rows", "action", "cli_qa", str(workdir / "formula.csv"))
    safe = rowforge(server, "tables", "export", "action", "cli_qa", "--columns", "question").stdout
    assert safe.splitlines()[-1].endswith(',"\'=HYPERLINK(""http://x"")"'), safe
    raw = rowforge(server, "tables", "export", "action", "cli_qa", "--columns", "question",
                   "--raw").stdout
    assert raw.splitlines()[-1].endswith(',"=HYPERLINK(""http://x"")"'), raw

    rowforge(server, "tables", "delete", "action", "cli_yaml")
    assert "cli_yaml" not in rowforge(server, "tables", "list").stdout


def _one_line(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_errors_exit_non_zero_with_the_reason(server: ServerProcess, workdir: Path) -> None:
    missing = _one_line(rowforge(server, "tables", "get", "action", "no_such_table", ok=False), 1)
    assert missing.startswith("rowforge: ") and "TABLE_NOT_FOUND" in missing
    # INVALID_ARGUMENT from the server exits 2, as local usage errors do.
    bad_where = _one_line(rowforge(server, "tables", "rows", "action", "cli_qa", "--where", "((",
                                   ok=False), 2)
    assert "where: " in bad_where and "INVALID_WHERE" in bad_where
    # A field violation that repeats the message is printed once.
    limit = _one_line(rowforge(server, "tables", "rows", "action", "cli_qa", "--limit", "500",
                               ok=False), 2)
    assert limit.count("must be between 1 and 100") == 1, limit
    no_file = _one_line(rowforge(server, "files", "upload", str(workdir / "nope.png"),
                                 ok=False), 2)
    assert "no such file" in no_file
    usage = _one_line(rowforge(server, "tables", "get", "spreadsheet", "x", ok=False), 2)
    assert "invalid choice" in usage and "--help" in usage


def test_unreachable_local_server_fails_at_once_with_what_to_do() -> None:
    import socket
    import time

    with socket.socket() as sock:  # a loopback port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROWFORGE_")}
    env["ROWFORGE_ADDRESS"] = f"127.0.0.1:{port}"
    # The same command once with --help: the interpreter's own start-up time on this machine.
    t0 = time.monotonic()
    subprocess.run([*ROWFORGE, "models", "list", "--help"], env=env, capture_output=True,
                   timeout=60)
    startup = time.monotonic() - t0
    t0 = time.monotonic()
    result = subprocess.run([*ROWFORGE, "models", "list"], env=env, capture_output=True,
                            text=True, timeout=60)
    took = time.monotonic() - t0
    line = _one_line(result, 1)
    assert line == (f"rowforge: no server answers at 127.0.0.1:{port}: is a server running "
                    "there? start one with 'rowforge serve' (or 'make serve'), or point "
                    "--address / ROWFORGE_ADDRESS at it")
    # No backoff retries (they took 3 s or more): within a second of the start-up time.
    assert took < startup + 1.0, (took, startup)


def test_files_upload_download_list_delete(server: ServerProcess, workdir: Path) -> None:
    source = workdir / "notes.txt"
    source.write_bytes(("line of text\n" * 50_000).encode())  # ~650 KB
    uploaded = json.loads(rowforge(server, "files", "upload", str(source), "--json").stdout)
    uri = uploaded[0]["uri"]
    assert uri.startswith("file://") and uploaded[0]["size"] == source.stat().st_size
    target = workdir / "copy.txt"
    out = rowforge(server, "files", "download", uri, "-o", str(target)).stdout
    assert target.read_bytes() == source.read_bytes()
    assert f"wrote {source.stat().st_size} bytes" in out
    assert uri in rowforge(server, "files", "list").stdout
    # Piped (not a terminal): only the URIs, one per line, for `URI=$(rowforge files upload x)`.
    piped = rowforge(server, "files", "upload", str(source), str(source)).stdout
    lines = piped.splitlines()
    assert len(lines) == 2 and all(re.fullmatch(r"file://\S+/notes\.txt", u) for u in lines)
    # A directory given with a trailing slash is made.
    rowforge(server, "files", "download", uri, "-o", str(workdir / "new-dir") + "/")
    assert (workdir / "new-dir" / "notes.txt").read_bytes() == source.read_bytes()
    rowforge(server, "files", "delete", uri)
    gone = rowforge(server, "files", "download", uri, "-o", str(workdir / "gone.txt"), ok=False)
    assert gone.returncode == 1 and "NOT_FOUND" in gone.stderr
    assert not (workdir / "gone.txt").exists()


def test_models_and_chat(server: ServerProcess) -> None:
    models = json.loads(rowforge(server, "models", "list", "--capability", "embed",
                                 "--json").stdout)
    assert "rowforge/embed" in {m["id"] for m in models}
    assert all("embed" in m["capabilities"] for m in models)
    assert "rowforge/chat" in rowforge(server, "models", "list").stdout
    answer = rowforge(server, "chat", "--model", "rowforge/chat", "Hello", "there").stdout
    assert answer.strip()
    piped = rowforge(server, "chat", "--json", stdin="What is 2+2?")
    assert json.loads(piped.stdout)["text"]


def test_batch_flow(server: ServerProcess, workdir: Path) -> None:
    created = rowforge(server, "batch", "create", str(workdir / "requests.jsonl"),
                       "--job-type", "cli")
    job_id = created.stdout.strip()
    assert job_id and "3 requests" in created.stderr
    status = json.loads(rowforge(server, "batch", "status", job_id, "--json").stdout)
    assert status["state"] == "populating" and status["metrics"]["total_requests"] == 3

    rowforge(server, "batch", "submit", job_id)
    watched = rowforge(server, "batch", "watch", job_id)
    assert f"job {job_id} succeeded: 3 succeeded, 0 failed" in watched.stdout
    assert "3/3" in watched.stderr  # the progress display reached the end

    out = workdir / "results.jsonl"
    rowforge(server, "batch", "results", job_id, "-o", str(out))
    results = {r["request_id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert set(results) == {"r1", "req_2", "r3"}
    assert all(r["state"] == "succeeded" for r in results.values())
    assert results["req_2"]["metadata"] == {"batch": "cli"}
    assert isinstance(results["r3"]["response_json"]["word"], str)
    assert sorted(r["sequence"] for r in results.values()) == [1, 2, 3]

    listed = json.loads(rowforge(server, "batch", "list", "--job-type", "cli", "--json").stdout)
    assert [j["job_id"] for j in listed] == [job_id]
    cancel = rowforge(server, "batch", "cancel", job_id, ok=False)
    assert cancel.returncode == 1 and "FAILED_PRECONDITION" in cancel.stderr


def test_batch_create_submit_watch_in_one_go(server: ServerProcess, workdir: Path) -> None:
    result = rowforge(server, "batch", "create", str(workdir / "requests.jsonl"), "--watch",
                      "--json")
    job = json.loads(result.stdout)
    assert job["state"] == "succeeded" and job["metrics"]["successful_requests"] == 3


def test_batch_file_errors_name_the_line(server: ServerProcess, workdir: Path) -> None:
    bad = workdir / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": \n')
    result = rowforge(server, "batch", "create", str(bad), ok=False)
    assert result.returncode == 2 and "bad.jsonl:2" in result.stderr
    bad.write_text('{"request_id": "x"}\n')
    result = rowforge(server, "batch", "create", str(bad), ok=False)
    assert result.returncode == 2 and "needs 'text'" in result.stderr


def test_one_timestamp_format_everywhere(server: ServerProcess, tmp_path: Path) -> None:
    (tmp_path / "ts.yaml").write_text("id: ts_t\ntable_type: action\ncols:\n  - id: x\n")
    (tmp_path / "ts.csv").write_text("x\nhello\n")
    rowforge(server, "tables", "create", "ts.yaml", cwd=tmp_path)
    rowforge(server, "tables", "add-rows", "action", "ts_t", "ts.csv", cwd=tmp_path)
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z"
    row = json.loads(rowforge(server, "tables", "rows", "action", "ts_t", "--json").stdout)
    exported = rowforge(server, "tables", "export", "action", "ts_t").stdout.splitlines()[1]
    assert re.fullmatch(stamp, row["Updated at"]), row
    assert exported.split(",")[1] == row["Updated at"]
    table = json.loads(rowforge(server, "tables", "get", "action", "ts_t", "--json").stdout)
    assert re.fullmatch(stamp, table["updated_at"]), table
    human = rowforge(server, "tables", "list").stdout
    assert re.search(r"ts_t\s+action\s+1\s+" + stamp, human), human
    assert "+00:00" not in human
