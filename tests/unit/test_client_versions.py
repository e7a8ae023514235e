"""The client on the versions it claims: the stubs load without a warning on whatever protobuf
and grpcio this interpreter has (`make test` runs this file in .venv-min too, on the floors of
requirements/client-min.txt, and checks they really are the floors installed there)."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FLOORS = ROOT / "requirements" / "client-min.txt"
STUBS = ["batch_job_service", "common", "file_service", "knowledge_service", "model_service",
         "table_service"]


def pinned() -> dict[str, str]:
    pins = {}
    for line in FLOORS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[name] = version
    return pins


def test_stubs_and_client_import_without_warnings() -> None:
    imports = "; ".join([f"import rowforge.v1.{s}_pb2, rowforge.v1.{s}_pb2_grpc" for s in STUBS]
                        + ["import rowforge.clients, rowforge.clients.batch"])
    result = subprocess.run([sys.executable, "-W", "error", "-c", imports], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_pyproject_floors_are_the_pinned_versions() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    for name in ("grpcio", "protobuf", "grpcio-status", "googleapis-common-protos"):
        assert f'"{name}>={pinned()[name]}' in text, name


def test_stubs_ask_for_no_newer_runtime_than_the_floors() -> None:
    floors = pinned()
    for stub in STUBS:
        grpc_code = (ROOT / "proto/rowforge/v1" / f"{stub}_pb2_grpc.py").read_text()
        assert f"GRPC_GENERATED_VERSION = '{floors['grpcio']}'" in grpc_code
        code = (ROOT / "proto/rowforge/v1" / f"{stub}_pb2.py").read_text()
        assert f"# Protobuf Python Version: {floors['protobuf']}" in code


@pytest.mark.skipif(os.environ.get("ROWFORGE_TEST_MIN_VERSIONS") != "1",
                    reason="only in .venv-min (make test-client-min)")
def test_this_interpreter_has_the_floors() -> None:
    for name, version in pinned().items():
        assert metadata.version(name) == version, name
