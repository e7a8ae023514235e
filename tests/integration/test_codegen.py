"""Code generation for other languages works from the .proto files as they are (no buf managed
mode): every file names its package for Go, Java, C#, PHP, Ruby, Objective-C and Swift, and
proto/buf.gen.go.yaml / buf.gen.python.yaml generate with the plugins on PATH (the TypeScript of
proto/buf.gen.yaml is checked by `make lint` and compiled by test_node_client.py)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROTO = ROOT / "proto"
BUF = ROOT / "node_modules" / ".bin" / "buf"
FILES = sorted((PROTO / "rowforge" / "v1").glob("*.proto"))
OPTIONS = {
    "csharp_namespace": '"Rowforge.V1"',
    "go_package": '"rowforge.dev/gen/go/rowforge/v1;rowforgev1"',
    "java_multiple_files": "true",
    "java_package": '"dev.rowforge.v1"',
    "objc_class_prefix": '"RFX"',
    "php_namespace": '"Rowforge\\\\V1"',
    "ruby_package": '"Rowforge::V1"',
    "swift_prefix": '"RF"',
}


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_every_file_sets_the_language_options(path: Path) -> None:
    text = path.read_text()
    found = dict(re.findall(r"^option (\w+) = (.+);$", text, re.M))
    for name, value in OPTIONS.items():
        assert found.get(name) == value, (path.name, name)
    outer = "".join(w.capitalize() for w in path.stem.split("_")) + "Proto"
    assert found["java_outer_classname"] == f'"{outer}"'


def generate(template: str, out: Path) -> subprocess.CompletedProcess[str]:
    config = yaml.safe_load((PROTO / template).read_text())
    for plugin in config["plugins"]:
        plugin["out"] = str(out)
    return subprocess.run([str(BUF), "generate", "--template", json.dumps(config)], cwd=PROTO,
                          capture_output=True, text=True, timeout=300)


def test_go(tmp_path: Path) -> None:
    missing = [p for p in ("protoc-gen-go", "protoc-gen-go-grpc") if shutil.which(p) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not on PATH (.ci/run installs Debian's packages)")
    result = generate("buf.gen.go.yaml", tmp_path)
    assert result.returncode == 0, result.stderr
    for path in FILES:
        code = (tmp_path / "rowforge" / "v1" / f"{path.stem}.pb.go").read_text()
        assert "\npackage rowforgev1\n" in code
        if "service " in path.read_text():
            assert (tmp_path / "rowforge" / "v1" / f"{path.stem}_grpc.pb.go").exists()
    grpc_code = (tmp_path / "rowforge/v1/table_service_grpc.pb.go").read_text()
    assert "func NewTableServiceClient(" in grpc_code


def test_python_with_protoc(tmp_path: Path) -> None:
    if shutil.which("protoc") is None:
        pytest.skip("protoc not on PATH (.ci/run installs Debian's protobuf-compiler)")
    result = generate("buf.gen.python.yaml", tmp_path)
    assert result.returncode == 0, result.stderr
    for path in FILES:
        assert (tmp_path / "rowforge" / "v1" / f"{path.stem}_pb2.py").exists()
        assert (tmp_path / "rowforge" / "v1" / f"{path.stem}_pb2.pyi").exists()
