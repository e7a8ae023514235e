"""A client install needs no C compiler: the Cython extensions are optional (the build warns
and goes on; rowforge.fastcore uses its pure-Python twins), and ROWFORGE_PUREPYTHON=1 skips
them for an install in seconds. Built from this checkout as pip builds it for a user (an
isolated build environment with pyproject's build requirements, from the package index or
pip's cache), into a folder of its own."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def install(target: Path, **env: str) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "--target",
         str(target), str(ROOT)],
        capture_output=True, text=True, timeout=600, env={**os.environ, **env})
    return result, time.monotonic() - started


def imports_client(target: Path) -> subprocess.CompletedProcess[str]:
    """Import from ``target`` alone: -S keeps site's .pth files (this checkout's editable
    install) away; the dependencies come from this venv's site-packages."""
    import sysconfig

    paths = [str(target), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    code = (f"import sys; sys.path[:0] = {paths!r}; import rowforge.clients, "
            "rowforge.fastcore as f, rowforge.v1.table_service_pb2_grpc; print(f.COMPILED, "
            "rowforge.clients.__file__)")
    return subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True,
                          text=True, timeout=60, cwd=target)


@pytest.mark.timeout(900)
def test_install_without_a_compiler(tmp_path: Path) -> None:
    # CC names a compiler that always fails: every extension's build fails, the install must not.
    result, _ = install(tmp_path / "site", CC="/bin/false", ROWFORGE_PUREPYTHON="0")
    assert result.returncode == 0, result.stdout + result.stderr
    assert not list((tmp_path / "site" / "rowforge" / "fastcore").glob("*.so"))
    # Typed (PEP 561): the client and the generated stubs with their .pyi.
    assert (tmp_path / "site" / "rowforge" / "clients" / "py.typed").exists()
    assert (tmp_path / "site" / "rowforge" / "py.typed").exists()
    assert (tmp_path / "site" / "rowforge" / "v1" / "table_service_pb2.pyi").exists()
    loaded = imports_client(tmp_path / "site")
    assert loaded.returncode == 0, loaded.stderr
    compiled, location = loaded.stdout.split()
    assert compiled == "False"  # the pure-Python twins
    assert location.startswith(str(tmp_path / "site"))


@pytest.mark.timeout(900)
def test_pure_python_install_takes_seconds(tmp_path: Path) -> None:
    result, seconds = install(tmp_path / "site", ROWFORGE_PUREPYTHON="1")
    assert result.returncode == 0, result.stdout + result.stderr
    print(f"client install (ROWFORGE_PUREPYTHON=1): {seconds:.1f} s")
    assert seconds < 90  # ~10 s on the loaded 2-core dev machine; generous
    loaded = imports_client(tmp_path / "site")
    assert loaded.returncode == 0, loaded.stderr
