"""The public surface of rowforge.fastcore and how it picks an implementation."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from rowforge import fastcore

try:
    from rowforge.fastcore import _ann, _rrf, _template  # noqa: F401

    BUILT = True
except ImportError:  # pragma: no cover - depends on the build
    BUILT = False

PROBE = """
import json, sys
import rowforge.fastcore as f
before = "hnswlib" in sys.modules
ann = f.AnnIndex
print(json.dumps({
    "compiled": f.COMPILED,
    "template": f.Template.__module__,
    "rrf": f.rrf.__module__,
    "ann": ann.__module__,
    "hnswlib_before_ann": before,
}))
"""


def _probe(**env: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(out.stdout)


def test_exports_are_pinned() -> None:
    assert sorted(fastcore.__all__) == [
        "AnnIndex",
        "COMPILED",
        "IndexCorrupt",
        "MissingReferenceError",
        "Template",
        "rename_references",
        "rrf",
    ]
    for name in fastcore.__all__:
        assert getattr(fastcore, name) is not None
    assert set(fastcore.__all__) <= set(dir(fastcore))


def test_unknown_attribute() -> None:
    with pytest.raises(AttributeError, match="no_such_thing"):
        fastcore.no_such_thing  # noqa: B018


def test_purepython_switch_forces_the_twins() -> None:
    info = _probe(ROWFORGE_PUREPYTHON="1")
    assert info == {
        "compiled": False,
        "template": "rowforge.fastcore._py.template",
        "rrf": "rowforge.fastcore._py.rrf",
        "ann": "rowforge.fastcore._py.ann",
        "hnswlib_before_ann": False,  # the ANN glue (numpy, hnswlib) loads on first use
    }


@pytest.mark.skipif(not BUILT, reason="the Cython extensions are not built")
def test_compiled_by_default_when_built() -> None:
    env = {k: v for k, v in os.environ.items() if k != "ROWFORGE_PUREPYTHON"}
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=60
    )
    info = json.loads(out.stdout)
    assert info["compiled"] is True
    assert info["template"] == "rowforge.fastcore._template"
    assert info["ann"] == "rowforge.fastcore._ann"
    assert info["hnswlib_before_ann"] is False


BLOCK_RRF = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "rowforge.fastcore._rrf":
            raise ImportError("simulated broken extension")
        return None
sys.meta_path.insert(0, Block())
"""


def test_broken_extension_falls_back_to_the_twins() -> None:
    out = subprocess.run(
        [sys.executable, "-c", BLOCK_RRF + PROBE],
        env={k: v for k, v in os.environ.items() if k != "ROWFORGE_PUREPYTHON"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    info = json.loads(out.stdout)
    assert info["compiled"] is False
    assert info["template"] == "rowforge.fastcore._py.template"
    assert info["ann"] == "rowforge.fastcore._py.ann"
