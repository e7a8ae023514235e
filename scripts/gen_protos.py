"""Regenerate the Python stubs of proto/rowforge/v1 in place (``make proto``).

Writes ``*_pb2.py``, ``*_pb2_grpc.py`` and mypy-protobuf ``*.pyi`` next to the sources, so
they import as ``rowforge.v1.<file>_pb2`` with no import rewriting. ``--check`` regenerates
into a temporary folder and exits 1 when the committed stubs differ.
"""

from __future__ import annotations

import filecmp
import os
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO = ROOT / "proto"
PACKAGE = PROTO / "rowforge" / "v1"
GENERATED = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def generate(out: Path) -> None:
    # protoc finds the mypy-protobuf plugins on PATH; they sit beside this interpreter.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    sources = sorted(str(p.relative_to(PROTO)) for p in PACKAGE.glob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO}",
        f"-I{include}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *sources,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


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
            if stale or extra:
                print("stubs differ from a fresh generation; run `make proto`:",
                      ", ".join(stale + extra))
                return 1
            print(f"{len(names)} generated files up to date")
            return 0
    for name in generated_files(PACKAGE):
        (PACKAGE / name).unlink()
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        for path in (Path(tmp) / "rowforge" / "v1").iterdir():
            shutil.copy(path, PACKAGE / path.name)
    print(f"generated {len(generated_files(PACKAGE))} files in {PACKAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
