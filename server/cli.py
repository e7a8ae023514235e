"""``rowforge serve`` and ``rowforge admin ...``: the server side of the command line."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import functools
import json
import os
import re
import socket
import sys
from collections.abc import Callable
from pathlib import Path

from rowforge.server.config import ConfigError, load_settings
from rowforge.server.scopes import SCOPES as SCOPE_CHOICES


def add_server_commands(sub: argparse._SubParsersAction) -> None:
    serve = sub.add_parser(
        "serve", help="start the gRPC server",
        description="Start the rowforge gRPC server. Settings come from defaults, then the TOML "
                    "file (--config or ROWFORGE_CONFIG), then ROWFORGE_<SETTING> variables, then "
                    "these flags; docs/config.md lists every setting. The default is the "
                    "embedded mode: SQLite and files in ./data, the built-in offline models, "
                    "auth off on 127.0.0.1:50051. Prints 'rowforge listening on HOST:PORT' once "
                    "it serves; SIGTERM or Ctrl-C stops it gracefully.")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 50051; 0 picks a free one)")
    serve.add_argument("--data-dir", help="where the database, files and indexes live")
    serve.add_argument("--config", help="TOML config file")
    serve.add_argument("--database-url", help="SQLAlchemy async URL (default SQLite in data dir)")
    serve.add_argument("--auth", action="store_true", default=None, help="require tokens")
    serve.add_argument("--insecure", action="store_true", default=None,
                       help="allow a non-loopback address with auth off")
    serve.add_argument("--log-format", choices=("json", "text"),
                       help="log lines as JSON objects (default) or human text")
    serve.add_argument("--tls-cert", help="PEM certificate chain: serve TLS (SIGHUP reloads)")
    serve.add_argument("--tls-key", help="PEM private key of --tls-cert")
    serve.add_argument("--client-ca", dest="tls_client_ca",
                       help="PEM CA bundle: require client certificates it signed (mTLS)")
    serve.set_defaults(func=_guarded(_serve))

    admin = sub.add_parser("admin", help="manage projects, tokens, the schema and backups")
    admin.add_argument("--config", help="TOML config file")
    admin.add_argument("--data-dir")
    admin.add_argument("--database-url")
    admin_sub = admin.add_subparsers(dest="admin_command", required=True)
    project = admin_sub.add_parser("create-project", help="create a project, print its id")
    project.add_argument("name")
    project.add_argument("--id", dest="project_id")
    project.set_defaults(func=_guarded(_create_project))
    token = admin_sub.add_parser(
        "create-token", help="create a token (printed once)",
        description="Create a personal access token for a project and print it (only its "
                    "hash is stored: it cannot be shown again). read tokens may only call "
                    "what changes no stored state; write tokens may call every RPC.")
    token.add_argument("--project", required=True)
    token.add_argument("--name", default="")
    token.add_argument("--scope", choices=SCOPE_CHOICES, default="write",
                       help="what the token may do (default write)")
    token.add_argument("--expires-in", type=duration_s, metavar="DURATION",
                       help="lifetime: 90d, 12h, 30m, 45s or seconds (default: no expiry)")
    token.set_defaults(func=_guarded(_create_token))
    listing = admin_sub.add_parser("list-tokens", help="list tokens (never their secrets)")
    listing.add_argument("--project", help="only this project's tokens")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.set_defaults(func=_guarded(_list_tokens))
    revoke = admin_sub.add_parser(
        "revoke-token", help="revoke a token by id",
        description="Revoke a token by its id (the part after rf_, as list-tokens shows it). "
                    "Servers refuse it within 30 s (their token cache).")
    revoke.add_argument("token_id")
    revoke.set_defaults(func=_guarded(_revoke_token))
    migrate = admin_sub.add_parser(
        "migrate", help="upgrade the database schema to this version's",
        description="Bring the system tables to the schema revision this rowforge runs on "
                    "(alembic migrations; an empty database is created). Back up first. "
                    "A server refuses to start on an older schema, and on a newer one.")
    migrate.add_argument("--check", action="store_true",
                         help="only report: exit 0 when up to date, 1 when an upgrade is due")
    migrate.set_defaults(func=_guarded(_migrate))
    backup = admin_sub.add_parser(
        "backup", help="back the embedded default up (SQLite, files, indexes)",
        description="Write a consistent backup of the data dir to PATH (a new or empty "
                    "directory), also while a server is serving it: SQLite's online backup, "
                    "the files the snapshot references, the knowledge indexes. PostgreSQL "
                    "deployments use pg_dump (README: Backups).")
    backup.add_argument("path")
    backup.set_defaults(func=_guarded(_backup))
    restore = admin_sub.add_parser(
        "restore", help="restore a backup into the data dir (server stopped)",
        description="Put a backup made by `rowforge admin backup` in place of the data dir's "
                    "database, files and indexes. Stop the server first; a data dir that "
                    "already has a database is replaced only with --force.")
    restore.add_argument("path")
    restore.add_argument("--force", action="store_true",
                         help="replace the data dir's existing database, files and indexes")
    restore.set_defaults(func=_guarded(_restore))


def _settings(args: argparse.Namespace):
    return load_settings(
        args.config,
        host=getattr(args, "host", None),
        port=getattr(args, "port", None),
        data_dir=args.data_dir,
        database_url=args.database_url,
        auth=getattr(args, "auth", None),
        insecure=getattr(args, "insecure", None),
        tls_cert=getattr(args, "tls_cert", None),
        tls_key=getattr(args, "tls_key", None),
        tls_client_ca=getattr(args, "tls_client_ca", None),
        log_json=None if getattr(args, "log_format", None) is None else args.log_format == "json",
    )


def _guarded(command: Callable[[argparse.Namespace], int]
             ) -> Callable[[argparse.Namespace], int]:
    """Run a server-side command; a failure a user can fix is one line on stderr.

    Exit code 2 for a configuration mistake, 1 for a runtime failure (port taken, database
    down); anything else is a bug and keeps its traceback.
    """

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        from rowforge.server.errors import RowforgeError

        try:
            return command(args)
        except ConfigError as exc:
            return _fail(f"config error: {exc}", 2)
        except RowforgeError as exc:
            return _fail(exc.message, 2)
        except KeyboardInterrupt:
            return 130
        except Exception as exc:
            message = startup_failure(exc)
            if message is None:
                raise
            return _fail(message, 1)

    return run


def _serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    from rowforge.server.app import serve
    from rowforge.server.logs import setup_logging

    setup_logging(settings.log_level, as_json=settings.log_json)
    check_address_free(settings.host, settings.port, reuse_port=settings.reuse_port)

    def ready(port: int) -> None:
        # A stable line on stdout for scripts and tests that start us with --port 0.
        print(f"rowforge listening on {settings.host}:{port}", flush=True)

    from rowforge.server.loop import run

    run(serve(settings, ready=ready), settings.event_loop)
    return 0


def _fail(message: str, code: int) -> int:
    print(f"rowforge: {message}", file=sys.stderr, flush=True)
    return code


def startup_failure(exc: BaseException) -> str | None:
    """One line for a failure a user can fix (address taken, database down, permissions).

    ``None`` for anything else: a bug keeps its traceback.
    """
    from rowforge.server.app import ListenError
    from rowforge.server.backup import BackupError
    from rowforge.server.storage.migrations import SchemaMismatch

    if isinstance(exc, ListenError | SchemaMismatch | BackupError):
        return str(exc)
    if isinstance(exc, PermissionError):
        return (f"cannot start: permission denied on {exc.filename or 'a file'}; choose a "
                "writable --data-dir")
    if _is_database_error(exc):
        return (f"cannot reach the database ({type(exc).__name__}: {_first_line(exc)}); check "
                "database_url (ROWFORGE_DATABASE_URL) and that the database is running")
    if isinstance(exc, OSError):
        return f"cannot start: {exc}"
    return None


def _is_database_error(exc: BaseException) -> bool:
    """Raised by, or from inside, the database drivers."""
    drivers = ("sqlalchemy", "asyncpg", "sqlite3", "aiosqlite")
    if type(exc).__module__.startswith(drivers):
        return True
    tb = exc.__traceback__
    while tb is not None:
        if any(f"{os.sep}{name}{os.sep}" in tb.tb_frame.f_code.co_filename for name in drivers):
            return True
        tb = tb.tb_next
    return False


def check_address_free(host: str, port: int, *, reuse_port: bool = False) -> None:
    """Fail early, with our message, when the port is taken (by anything but servers that
    share it, with ``reuse_port``).

    grpc would also refuse, but only after logging a C-level error line of its own.
    """
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return  # grpc reports an unresolvable host
    from rowforge.server.app import ListenError

    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            try:
                probe.bind(address)
            except OSError:
                raise ListenError(host, port) from None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:200]


def _migrate(args: argparse.Namespace) -> int:
    from rowforge.server.storage import migrations
    from rowforge.server.storage.db import Database

    settings = _settings(args)
    settings.data_dir.mkdir(parents=True, exist_ok=True)

    async def run() -> tuple[int, str]:
        db = Database(settings.resolved_database_url)
        try:
            if args.check:
                async with db.read() as conn:
                    now = await conn.run_sync(migrations.state)
                if now.fresh:
                    return 1, f"the database is empty: migrate creates revision {now.head}"
                if now.up_to_date:
                    return 0, f"the schema is at revision {now.head}, the newest"
                current = now.current or f"{migrations.BASELINE} (unversioned: before migrations)"
                return 1, f"the schema is at revision {current}; this rowforge's is {now.head}"
            return 0, await db.prepare_schema(upgrade=True)
        finally:
            await db.close()

    code, message = asyncio.run(run())
    print(message)
    return code


def _backup(args: argparse.Namespace) -> int:
    from rowforge.server.backup import backup, sqlite_path

    settings = _settings(args)
    info = backup(sqlite_path(settings.resolved_database_url), settings.data_dir,
                  Path(args.path))
    print(f"backed up to {info.path}: schema revision {info.schema_revision}, {info.files} "
          f"files ({info.file_bytes:,} bytes), in {info.seconds:.1f} s")
    return 0


def _restore(args: argparse.Namespace) -> int:
    from rowforge.server.backup import restore, sqlite_path

    settings = _settings(args)
    info = restore(Path(args.path), sqlite_path(settings.resolved_database_url),
                   settings.data_dir, force=args.force)
    print(f"restored {args.path} into {info.path}: schema revision {info.schema_revision}, "
          f"{info.files} files, in {info.seconds:.1f} s")
    return 0


async def _with_db(args: argparse.Namespace, fn):
    from rowforge.server.auth import ensure_default_project
    from rowforge.server.storage.db import Database

    settings = _settings(args)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.resolved_database_url)
    try:
        await db.prepare_schema()
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

    token = asyncio.run(_with_db(args, lambda db: create_token(
        db, args.project, args.name, scope=args.scope, expires_in_s=args.expires_in)))
    print(token)
    return 0


def _list_tokens(args: argparse.Namespace) -> int:
    from rowforge.server.auth import list_tokens

    found = asyncio.run(_with_db(args, lambda db: list_tokens(db, args.project)))

    def when(value: dt.datetime | None) -> str | None:
        return value.isoformat(timespec="seconds") if value is not None else None

    for info in found:
        row = {"id": info.id, "project": info.project_id, "name": info.name,
               "scope": info.scope, "state": info.state, "created": when(info.create_time),
               "expires": when(info.expire_time), "lastUsed": when(info.last_used_time)}
        if args.json:
            print(json.dumps(row))
        else:
            print("  ".join(f"{key}={value if value is not None else '-'}"
                            for key, value in row.items()))
    return 0


def _revoke_token(args: argparse.Namespace) -> int:
    from rowforge.server.auth import revoke_token

    asyncio.run(_with_db(args, lambda db: revoke_token(db, args.token_id)))
    print(f"revoked {args.token_id}")
    return 0


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_S = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def duration_s(text: str) -> float:
    """``90d``, ``12h``, ``30m``, ``45s`` or plain seconds, as seconds (positive)."""
    match = _DURATION.match(text.lower())
    if match is None or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration: use e.g. 90d, 12h, 30m, 45s or seconds")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rowforge-server")
    add_server_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)
