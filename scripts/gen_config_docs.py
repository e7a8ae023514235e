"""Write docs/config.md from the Settings definition (``--check``: fail if it is stale)."""

from __future__ import annotations

import sys
from pathlib import Path

from rowforge.server.config_docs import missing_descriptions, render

TARGET = Path(__file__).resolve().parents[1] / "docs" / "config.md"


def main() -> int:
    missing = missing_descriptions()
    if missing:
        print(f"no description for: {', '.join(missing)} (add a #: comment / docstring entry)")
        return 1
    text = render()
    if "--check" in sys.argv:
        if not TARGET.exists() or TARGET.read_text() != text:
            print(f"{TARGET} is stale: run python scripts/gen_config_docs.py")
            return 1
        return 0
    TARGET.write_text(text)
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
