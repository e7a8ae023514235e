"""``rowforge serve`` and ``rowforge admin ...``: the server side of the command line."""

from __future__ import annotations

import argparse
import asyncio
import sys

from rowforge.server.config import load_settings


def add_server_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    serve = sub.add_parser("serve", help="start the gRPC server")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 50051; 0 picks a free one)")
    serve.add_argument("--data-dir", help="where the database, files and indexes live")
    serve.add_argument("--config", help="TOML config file")
    serve.add_argument("--database-url", help="SQLAlchemy async URL (default SQLite in data dir)")
    serve.add_argument("--auth", action="store_true", default=None, help="require tokens")
    serve.add_argument("--insecure", action="store_true", default=None,
                       help="allow a non-loopback address with auth off")
    serve.set_defaults(func=_serve)

    admin = sub.add_parser("admin", help="manage projects and tokens")
    admin.add_argument("--config", help="TOML config file")
    admin.add_argument("--data-dir")
    admin.add_argument("--database-url")
    admin_sub = admin.add_subparsers(dest="admin_command", required=True)
    project = admin_sub.add_parser("create-project", help="create a project, print its id")
    project.add_argument("name")
    project.add_argument("--id", dest="project_id")
    project.set_defaults(func=_create_project)
    token = admin_sub.add_parser("create-token", help="create a token (printed once)")
    token.add_argument("--project", required=True)
    token.add_argument("--name", default="")
    token.set_defaults(func=_create_token)


def _settings(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    return load_settings(
        args.config,
        host=getattr(args, "host", None),
        port=getattr(args, "port", None),
        data_dir=args.data_dir,
        database_url=args.database_url,
        auth=getattr(args, "auth", None),
        insecure=getattr(args, "insecure", None),
    )


def _serve(args: argparse.Namespace) -> int:
    from rowforge.server.app import serve
    from rowforge.server.logs import setup_logging

    settings = _settings(args)
    setup_logging(settings.log_level, as_json=settings.log_json)

    def ready(port: int) -> None:
        # A stable line on stdout for scripts and tests that start us with --port 0.
        print(f"rowforge listening on {settings.host}:{port}", flush=True)

    from rowforge.server.loop import run

    run(serve(settings, ready=ready), settings.event_loop)
    return 0


async def _with_db(args: argparse.Namespace, fn):  # type: ignore[no-untyped-def]
    from rowforge.server.auth import ensure_default_project
    from rowforge.server.storage.db import Database

    settings = _settings(args)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.resolved_database_url)
    try:
        await db.create_schema()
        await ensure_default_project(db)
        return await fn(db)
    finally:
        await db.close()


def _create_project(args: argparse.Namespace) -> int:
    from rowforge.server.auth import create_project

    project = asyncio.run(_with_db(args, lambda db: create_project(db, args.name, args.project_id)))
    print(project.id)
    return 0


def _create_token(args: argparse.Namespace) -> int:
    from rowforge.server.auth import create_token

    token = asyncio.run(_with_db(args, lambda db: create_token(db, args.project, args.name)))
    print(token)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rowforge-server")
    add_server_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    from rowforge.server.errors import RowforgeError

    try:
        return int(args.func(args) or 0)
    except RowforgeError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
