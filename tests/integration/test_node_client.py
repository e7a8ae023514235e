"""The Node.js client in clients/node (@grpc/grpc-js + @grpc/proto-loader straight from
proto/) against a real server: create a table, stream rows, read a batch job's results."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.server import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "clients" / "node" / "example.js"
NODE = shutil.which("node")
MODULES = ROOT / "node_modules"

pytestmark = [
    pytest.mark.skipif(NODE is None, reason="node is not installed (the Node client needs it)"),
    pytest.mark.skipif(not (MODULES / "@grpc" / "grpc-js").is_dir()
                       or not (MODULES / "@grpc" / "proto-loader").is_dir(),
                       reason="node_modules lacks @grpc/grpc-js or @grpc/proto-loader: run "
                              "`npm ci` at the repository root"),
]


def run_node(address: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROWFORGE_")}
    env["ROWFORGE_ADDRESS"] = address
    return subprocess.run([str(NODE), str(EXAMPLE)], env=env, capture_output=True, text=True,
                          timeout=90, cwd=ROOT)


def test_node_client_tables_and_batch(server: ServerProcess) -> None:
    result = run_node(server.address)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)

    assert out["table"]["cols"] == ["ID", "Updated at", "topic", "summary"]
    events = out["stream"]["events"]
    assert events.count("row_created") == 2 and events.count("row_completed") == 2
    assert events[-1] == "completed" and events.count("completed") == 1
    assert "delta" in events
    # What was streamed is what was stored.
    stored = {row["id"]: row["cells"] for row in out["rows"]}
    assert out["total"] == 2 and {c["topic"] for c in stored.values()} == {"gRPC", "Node.js"}
    for key, text in out["stream"]["text"].items():
        row_id, column = key.split("/")
        assert column == "summary" and text and stored[row_id]["summary"] == text

    batch = out["batch"]
    assert batch["state"] == "JOB_STATE_SUCCEEDED"
    results = {r["request_id"]: r for r in batch["results"]}
    assert [r["sequence"] for r in batch["results"]] == [1, 2]
    assert all(r["state"] == "REQUEST_STATE_SUCCEEDED" for r in results.values())
    assert results["n1"]["response_text"]
    assert isinstance(results["n2"]["response_json"]["colour"], str)
    assert results["n2"]["metadata"] == {"source": "node"}


def test_node_client_reports_an_unreachable_server() -> None:
    result = run_node("127.0.0.1:9")
    assert result.returncode == 1
    assert result.stderr.startswith("error: code 14")  # UNAVAILABLE
