"""Type-check the server and the clients with mypy, and the examples with ``mypy --strict``
(``make lint`` runs it).

The source folders map onto one package (``proto/rowforge`` is ``rowforge``, ``server`` is
``rowforge.server``, ...: see ``setup.py``), which an editable install resolves with an import
hook that mypy cannot follow. So this builds the package as mypy sees it, a tree of symlinks
under ``.typecheck/``, and runs mypy on it with the settings in ``pyproject.toml``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TREE = ROOT / ".typecheck"
#: Subpackages of ``rowforge`` that live in their own folders.
FOLDERS = {"server": "server", "clients": "clients", "fastcore": "fastcore"}
CHECKED = ["rowforge.server", "rowforge.clients", "rowforge.codec", "rowforge.cell_values"]


def build_tree() -> Path:
    package = TREE / "rowforge"
    shutil.rmtree(TREE, ignore_errors=True)
    package.mkdir(parents=True)
    for entry in (ROOT / "proto" / "rowforge").iterdir():
        if entry.name != "__pycache__":
            os.symlink(entry, package / entry.name)
    for name, folder in FOLDERS.items():
        os.symlink(ROOT / folder, package / name)
    return TREE


def main(argv: list[str]) -> int:
    tree = build_tree()
    env = {**os.environ, "MYPYPATH": str(tree)}
    mypy = [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml")]
    packages = [arg for name in CHECKED for arg in ("-p", name)]
    code = subprocess.call([*mypy, *packages, *argv], cwd=tree, env=env)
    # The examples are what users write: they must pass mypy's strictest mode against the
    # client (which is held to it too, wherever the examples reach).
    # tests/typing asserts the client's types (sync and asyncio) the same way.
    examples = subprocess.call([*mypy, "--strict", str(ROOT / "examples"),
                                str(ROOT / "tests" / "typing"), *argv], cwd=tree, env=env)
    return code or examples


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
