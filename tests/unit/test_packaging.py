"""Packaging metadata that installs without setuptools deprecation warnings."""

from __future__ import annotations

import tomllib
from pathlib import Path

PYPROJECT = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())


def test_license_is_an_spdx_expression() -> None:
    # A table ({text = ...}) is deprecated since setuptools 77 and warns on every install.
    assert PYPROJECT["project"]["license"] == "Apache-2.0"
    assert not any(c.startswith("License ::") for c in PYPROJECT["project"].get("classifiers", []))
    assert "setuptools>=77" in PYPROJECT["build-system"]["requires"]
