"""The ``rowforge`` command: ``serve`` and ``admin`` (server side), and client commands."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rowforge", description="rowforge command line")
    sub = parser.add_subparsers(dest="command", required=True)
    try:
        from rowforge.server.cli import add_server_commands
    except ImportError:  # client-only install
        add_server_commands = None
    if add_server_commands is not None:
        add_server_commands(sub)
    args = parser.parse_args(argv)
    from rowforge.server.errors import RowforgeError

    try:
        return int(args.func(args) or 0)
    except RowforgeError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
