"""The TypeScript client in clients/node (protoc-gen-es messages, @connectrpc/connect-node
over HTTP/2), compiled with tsc, against a real server: create a table, stream rows (an int
beyond 2^53 included, as a bigint), read them back, upload and download a file, run a batch job
and read its results; and over TLS against a server with its own certificate."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from rowforge.v1 import model_service_pb2 as mpb
from rowforge.v1 import model_service_pb2_grpc
from tests.support.fake_grpc import FakeServer
from tests.support.server import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "clients" / "node"
NODE = shutil.which("node")
TSC = ROOT / "node_modules" / ".bin" / "tsc"

pytestmark = [
    pytest.mark.skipif(NODE is None, reason="node is not installed (the Node client needs it)"),
    pytest.mark.skipif(not TSC.exists() or not (ROOT / "node_modules/@connectrpc/connect-node")
                       .is_dir(), reason="node_modules lacks typescript or @connectrpc: run "
                                         "`npm ci` at the repository root"),
]


@pytest.fixture(scope="module")
def example() -> Path:
    """clients/node compiled (tsc: strict type checking of the client and the generated code)."""
    result = subprocess.run([str(TSC), "-p", str(PACKAGE)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return PACKAGE / "dist" / "example.js"


def run_node(example: Path, address: str, *args: str, **env: str
             ) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ROWFORGE_")}
    environ.update(ROWFORGE_ADDRESS=address, **env)
    return subprocess.run([str(NODE), str(example), *args], env=environ, capture_output=True,
                          text=True, timeout=120, cwd=ROOT)


def test_typescript_client_tables_files_and_batch(server: ServerProcess, example: Path) -> None:
    result = run_node(example, server.address)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)

    assert out["table"]["cols"] == ["ID", "Updated at", "topic", "n", "summary"]
    events = out["stream"]["events"]
    assert events.count("rowCreated") == 2 and events.count("rowCompleted") == 2
    assert events[-1] == "completed" and events.count("completed") == 1
    assert "delta" in events and "batch" not in events  # streamEvents opened the batches
    # What was streamed is what was stored; the int beyond 2^53 came back exactly.
    stored = {row["id"]: row["cells"] for row in out["rows"]}
    assert out["total"] == 2 and {c["topic"] for c in stored.values()} == {"gRPC", "Node.js"}
    assert {c["n"] for c in stored.values()} == {"9007199254740993", "42"}
    assert out["bigRoundTrip"] is True
    for key, text in out["stream"]["text"].items():
        row_id, column = key.split("/")
        assert column == "summary" and text and stored[row_id]["summary"] == text

    assert out["file"]["uri"].startswith("file://") and out["file"]["size"] == 22
    assert out["file"]["roundTrip"] is True

    batch = out["batch"]
    assert batch["state"] == "SUCCEEDED"
    results = {r["requestId"]: r for r in batch["results"]}
    assert [r["sequence"] for r in batch["results"]] == [1, 2]
    assert all(r["state"] == "SUCCEEDED" for r in results.values())
    assert results["n1"]["responseText"]
    assert isinstance(results["n2"]["responseJson"]["colour"], str)
    assert results["n2"]["metadata"] == {"source": "node"}


def test_typescript_client_reports_an_unreachable_server(example: Path) -> None:
    result = run_node(example, "127.0.0.1:9")
    assert result.returncode == 1
    assert result.stderr.startswith("error: code 14 (Unavailable)")


class Models(model_service_pb2_grpc.ModelServiceServicer):
    async def ListModels(self, request, context):  # type: ignore[no-untyped-def]
        return mpb.ListModelsResponse(items=[mpb.Model(id="tls/model")])


def test_typescript_client_over_tls(example: Path, tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    with FakeServer([Models()], tls=(key.read_bytes(), cert.read_bytes())) as fake:
        trusted = run_node(example, f"https://{fake.address}", "tls-check",
                           ROWFORGE_ROOT_CERTS=str(cert))
        assert trusted.returncode == 0, trusted.stderr
        assert json.loads(trusted.stdout) == {"models": ["tls/model"]}
        # Without the roots the certificate is not trusted; plaintext is not TLS.
        untrusted = run_node(example, f"https://{fake.address}", "tls-check")
        assert untrusted.returncode == 1 and "self-signed certificate" in untrusted.stderr
        plaintext = run_node(example, fake.address, "tls-check")
        assert plaintext.returncode == 1
