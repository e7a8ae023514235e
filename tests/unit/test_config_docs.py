"""docs/config.md stays what the Settings definition generates, and documents everything."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from rowforge.server.config import Settings
from rowforge.server.config_docs import missing_descriptions, render

DOC = Path(__file__).resolve().parents[2] / "docs" / "config.md"


def test_every_setting_and_model_field_has_a_description() -> None:
    assert missing_descriptions() == [], "add a #: comment above each Settings field"


def test_docs_config_md_is_current() -> None:
    assert DOC.read_text() == render(), "run: .venv/bin/python scripts/gen_config_docs.py"


def test_every_setting_is_listed_with_its_variable() -> None:
    text = DOC.read_text()
    for f in dataclasses.fields(Settings):
        assert f"| `{f.name}` |" in text and f"`ROWFORGE_{f.name.upper()}`" in text
    assert "| `port` | `50051` | `ROWFORGE_PORT` | `--port` |" in text
