"""Regenerate the Python stubs of proto/rowforge/v1 in place, and the TypeScript of
clients/node/src/gen with ``buf generate`` (proto/buf.gen.yaml) (``make proto``).

Writes ``*_pb2.py``, ``*_pb2_grpc.py`` and mypy-protobuf ``*.pyi`` next to the sources, so
they import as ``rowforge.v1.<file>_pb2`` with no import rewriting. ``--check`` regenerates
into a temporary folder and exits 1 when the committed stubs differ.

protoc runs from the oldest grpcio-tools the client supports (``.venv-min``, made by ``make
min-venv`` from requirements/client-min.txt; ``ROWFORGE_PROTOC_PYTHON`` names another
interpreter): generated code demands a protobuf runtime at least as new as the protoc that wrote
it, and grpc stubs a grpcio at least as new as their grpcio-tools, so stubs from the newest
tools would lift the client's floors to the newest releases. The ``.pyi`` files come from this
interpreter's mypy-protobuf.
"""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO = ROOT / "proto"
PACKAGE = PROTO / "rowforge" / "v1"
GENERATED = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")
BUF = ROOT / "node_modules" / ".bin" / "buf"
TS_OUT = ROOT / "clients" / "node" / "src" / "gen"


def protoc_python() -> str:
    python = os.environ.get("ROWFORGE_PROTOC_PYTHON") or str(ROOT / ".venv-min" / "bin" / "python")
    if not Path(python).exists():
        raise SystemExit(f"{python} is missing: run `make min-venv` (the oldest grpcio-tools "
                         "the client supports generates the stubs)")
    return python


def generate(out: Path) -> None:
    sources = sorted(str(p.relative_to(PROTO)) for p in PACKAGE.glob("*.proto"))
    plugins = Path(sys.executable).parent  # mypy-protobuf's plugins sit beside this interpreter
    # `python -m grpc_tools.protoc` adds the well-known types' include folder itself.
    args = [
        protoc_python(), "-m", "grpc_tools.protoc",
        f"-I{PROTO}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--plugin=protoc-gen-mypy={plugins / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={plugins / 'protoc-gen-mypy_grpc'}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *sources,
    ]
    result = subprocess.run(args, cwd=PROTO, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"protoc failed:\n{result.stderr}")


def generate_ts(out: Path) -> None:
    """buf generate with proto/buf.gen.yaml, its output folder replaced by ``out``."""
    import json

    import yaml

    template = yaml.safe_load((PROTO / "buf.gen.yaml").read_text())
    for plugin in template["plugins"]:
        plugin["out"] = str(out)
    result = subprocess.run([str(BUF), "generate", "--template", json.dumps(template)],
                            cwd=PROTO, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"buf generate failed:\n{result.stderr}")


def ts_files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.ts"))}


def generated_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(GENERATED))


def main() -> int:
    if "--check" in sys.argv:
        with tempfile.TemporaryDirectory() as tmp:
            generate(Path(tmp))
            fresh = Path(tmp) / "rowforge" / "v1"
            names = generated_files(fresh)
            stale = [n for n in names if not (PACKAGE / n).exists()
                     or not filecmp.cmp(fresh / n, PACKAGE / n, shallow=False)]
            extra = sorted(set(generated_files(PACKAGE)) - set(names))
            generate_ts(Path(tmp) / "ts")
            fresh_ts, committed_ts = ts_files(Path(tmp) / "ts"), ts_files(TS_OUT)
            stale += [f"clients/node/src/gen/{n}" for n in sorted(set(fresh_ts) | set(committed_ts))
                      if fresh_ts.get(n) != committed_ts.get(n)]
            if stale or extra:
                print("stubs differ from a fresh generation; run `make proto`:",
                      ", ".join(stale + extra))
                return 1
            print(f"{len(names) + len(fresh_ts)} generated files up to date")
            return 0
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))  # first: a failed run leaves the committed stubs alone
        for name in generated_files(PACKAGE):
            (PACKAGE / name).unlink()
        for path in (Path(tmp) / "rowforge" / "v1").iterdir():
            shutil.copy(path, PACKAGE / path.name)
    print(f"generated {len(generated_files(PACKAGE))} files in {PACKAGE.relative_to(ROOT)}")
    generate_ts(TS_OUT)
    print(f"generated {len(ts_files(TS_OUT))} files in {TS_OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
