# PYTHON_ARGCOMPLETE_OK
"""The ``rowforge`` command.

Server side: ``rowforge serve`` and ``rowforge admin ...`` (from :mod:`rowforge.server.cli`,
when the server extra is installed). Client side, against ``--address`` (or
``ROWFORGE_ADDRESS``) with ``--token`` / ``--project`` (or ``ROWFORGE_TOKEN`` /
``ROWFORGE_PROJECT_ID``)::

    rowforge tables list|get|create|delete|add-rows|rows|export
    rowforge files upload|download|list|delete
    rowforge models list
    rowforge chat "question"
    rowforge batch create|submit|status|watch|results|cancel|list

Human tables by default; ``--json`` prints JSON (JSON lines for rows and results) for scripts,
and errors as one JSON object on stderr. Exit codes: 0 success (also when the reader of stdout
went away: ``| head``), 1 failure reported by the server (or a failed job), 2 usage error or
INVALID_ARGUMENT (local or from the server). Shell completion with argcomplete (the ``client``
extra): ``eval "$(register-python-argcomplete rowforge)"``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import pydantic

from rowforge.clients import _cli_commands as cmd
from rowforge.clients._cli_output import abandon_progress
from rowforge.clients._cli_schema import SCHEMA_HELP, describe_validation
from rowforge.clients._version import __version__
from rowforge.clients.exceptions import RowForgeError

TABLE_TYPES = ("action", "knowledge", "chat")


def _common() -> argparse.ArgumentParser:
    """Options every client command takes, before or after the command name."""
    common = argparse.ArgumentParser(add_help=False)
    s = argparse.SUPPRESS
    common.add_argument("--address", default=s, help="server host:port (ROWFORGE_ADDRESS)")
    common.add_argument("--token", default=s, help="access token (ROWFORGE_TOKEN)")
    common.add_argument("--project", default=s, help="project id (ROWFORGE_PROJECT_ID)")
    common.add_argument("--timeout", type=float, default=s,
                        help="deadline of each call in seconds (ROWFORGE_TIMEOUT_SEC)")
    common.add_argument("--json", action="store_true", default=s,
                        help="print JSON for scripts instead of tables")
    return common


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line usage error (exit code 2) instead of the usage block."""

    def error(self, message: str) -> NoReturn:
        if "--json" in sys.argv[1:]:
            self.exit(2, _json_error("USAGE", "USAGE", f"{message} (see {self.prog} --help)"))
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _leaf(sub: Any, name: str, func: Callable[[argparse.Namespace], int], common: Any,
          help: str, epilog: str | None = None) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, parents=[common], help=help, description=help, epilog=epilog,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.set_defaults(func=func)
    return parser


def _table_commands(sub: Any, common: Any) -> None:
    tables = sub.add_parser("tables", help="generative tables").add_subparsers(
        dest="tables_command", required=True)
    p = _leaf(tables, "list", cmd.tables_list, common, "list tables of a type")
    p.add_argument("--type", choices=TABLE_TYPES, default="action")
    p.add_argument("--search", default="", help="only ids starting with this")
    p.add_argument("--count", action="store_true", help="count rows")
    p = _leaf(tables, "get", cmd.tables_get, common, "show a table's schema")
    p.add_argument("type", choices=TABLE_TYPES)
    p.add_argument("table_id")
    p = _leaf(tables, "create", cmd.tables_create, common,
              "create a table from a YAML or JSON schema file ({id, cols, embedding_model})",
              epilog=SCHEMA_HELP)
    p.add_argument("schema", help="schema file (.json, .yaml)")
    p.add_argument("--type", choices=TABLE_TYPES, help="table type (or table_type in the file)")
    p.add_argument("--id", help="table id (overrides the file's)")
    p = _leaf(tables, "delete", cmd.tables_delete, common, "delete a table and its rows")
    p.add_argument("type", choices=TABLE_TYPES)
    p.add_argument("table_id")
    p = _leaf(tables, "add-rows", cmd.tables_add_rows, common,
              "add rows from a CSV/TSV file (first line: column ids) and generate them")
    p.add_argument("type", choices=TABLE_TYPES)
    p.add_argument("table_id")
    p.add_argument("file")
    p.add_argument("--tsv", action="store_true", help="tab-separated (default: by extension)")
    p.add_argument("--no-generate", action="store_true", help="store inputs only")
    p.add_argument("--job", action="store_true",
                   help="generate in a background table job (returns once stored; with "
                        "--watch, follows it)")
    p.add_argument("--watch", action="store_true", help="with --job: follow the job")
    p = _leaf(tables, "rows", cmd.tables_rows, common, "list rows")
    p.add_argument("type", choices=TABLE_TYPES)
    p.add_argument("table_id")
    p.add_argument("--where", help="""filter, e.g. '"n" > 3'""")
    p.add_argument("--columns", help="comma-separated columns")
    p.add_argument("--search", help="full-text query")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--offset", type=int, default=0)
    p.add_argument("--all", action="store_true", help="every row, page after page")
    p = _leaf(tables, "regen", cmd.tables_regen, common,
              "regenerate rows as a durable background job (a table job)")
    p.add_argument("type", choices=TABLE_TYPES)
    p.add_argument("table_id")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--all", action="store_true", help="every row")
    which.add_argument("--where", help="""rows matching a filter, e.g. '"n" > 3'""")
    which.add_argument("--row-id", action="append", help="a row id (repeatable)")
    p.add_argument("--strategy", default="run_all",
                   choices=["run_all", "run_before", "run_selected", "run_after"])
    p.add_argument("--column", default="", help="pivot column of the strategy")
    p.add_argument("--only-missing", action="store_true",
                   help="only cells that are empty or not done")
    p.add_argument("--watch", action="store_true", help="follow it with a progress bar")
    p = _leaf(tables, "backfill", cmd.tables_backfill, common,
              "fill a generated column for every row as a background job")
    p.add_argument("type", choices=TABLE_TYPES)
    p.add_argument("table_id")
    p.add_argument("column")
    p.add_argument("--where", help="only rows matching this filter")
    p.add_argument("--all-cells", action="store_true",
                   help="regenerate filled cells too (default: only empty or errored ones)")
    p.add_argument("--watch", action="store_true", help="follow it with a progress bar")
    p = _leaf(tables, "export", cmd.tables_export, common, "export rows as CSV/TSV")
    p.add_argument("type", choices=TABLE_TYPES)
    p.add_argument("table_id")
    p.add_argument("-o", "--output", help="file (default: stdout)")
    p.add_argument("--tsv", action="store_true")
    p.add_argument("--where")
    p.add_argument("--columns", help="comma-separated columns")
    p.add_argument("--raw", action="store_true",
                   help="text exactly as stored (default: a leading ' before values starting "
                        "with = + - @, tab or CR, so spreadsheets do not run them as formulas)")


def _file_commands(sub: Any, common: Any) -> None:
    files = sub.add_parser("files", help="stored files").add_subparsers(
        dest="files_command", required=True)
    p = _leaf(files, "upload", cmd.files_upload, common, "upload files; prints their URIs")
    p.add_argument("paths", nargs="+")
    p = _leaf(files, "download", cmd.files_download, common, "download a file")
    p.add_argument("uri")
    p.add_argument("-o", "--output", help="file or directory ('-': stdout)")
    _leaf(files, "list", cmd.files_list, common, "list the project's files")
    p = _leaf(files, "delete", cmd.files_delete, common, "delete a file")
    p.add_argument("uri")
    p.add_argument("--force", action="store_true", help="even if rows use it")


def _model_commands(sub: Any, common: Any) -> None:
    models = sub.add_parser("models", help="models").add_subparsers(
        dest="models_command", required=True)
    p = _leaf(models, "list", cmd.models_list, common, "list the server's models")
    p.add_argument("--capability", action="append",
                   choices=("chat", "embed", "rerank", "image", "audio"))
    p = _leaf(sub, "chat", cmd.chat, common, "stream a chat answer to the terminal")
    p.add_argument("message", nargs="*", help="the message (default: stdin)")
    p.add_argument("--model", help="model id (default: the server's)")
    p.add_argument("--system", help="system prompt")
    p.add_argument("--max-tokens", type=int)
    p.add_argument("--temperature", type=float)
    p.add_argument("--attach", action="append", help="file URI or URL of an image/audio")


def _batch_commands(sub: Any, common: Any) -> None:
    batch = sub.add_parser("batch", help="batch jobs").add_subparsers(
        dest="batch_command", required=True)
    p = _leaf(batch, "create", cmd.batch_create, common,
              "create a job from a JSONL file ({request_id, text | content_parts, "
              "output_schema, metadata} per line); prints the job id")
    p.add_argument("file")
    p.add_argument("--model")
    p.add_argument("--temperature", type=float)
    p.add_argument("--max-output-tokens", type=int)
    p.add_argument("--system", help="system instruction")
    p.add_argument("--job-type")
    p.add_argument("--max-batch-size", type=int, default=0)
    p.add_argument("--submit", action="store_true", help="submit it too")
    p.add_argument("--watch", action="store_true", help="submit and watch until it ends")
    p = _leaf(batch, "submit", cmd.batch_submit, common, "start processing a job")
    p.add_argument("job_id")
    p.add_argument("--watch", action="store_true")
    p = _leaf(batch, "status", cmd.batch_status, common, "a job's state and metrics")
    p.add_argument("job_id")
    p = _leaf(batch, "watch", cmd.batch_watch, common,
              "follow a job with a progress bar until it ends (exit 1 unless it succeeded)")
    p.add_argument("job_id")
    p = _leaf(batch, "results", cmd.batch_results, common, "download results as JSONL")
    p.add_argument("job_id")
    p.add_argument("-o", "--output", help="file (default: stdout)")
    p.add_argument("--no-follow", action="store_true",
                   help="only what exists now (default: wait until the job ends)")
    p = _leaf(batch, "cancel", cmd.batch_cancel, common, "cancel a job")
    p.add_argument("job_id")
    p = _leaf(batch, "list", cmd.batch_list, common, "list jobs, newest first")
    p.add_argument("--state")
    p.add_argument("--job-type")
    p.add_argument("--limit", type=int, default=100)


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = _Parser(prog="rowforge", description="rowforge command line", parents=[common])
    parser.add_argument("--version", action="version", version=f"rowforge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    try:
        from rowforge.server.cli import add_server_commands
    except ImportError:  # client-only install
        add_server_commands = None  # type: ignore[assignment]
    if add_server_commands is not None:
        add_server_commands(sub)
    _table_commands(sub, common)
    _file_commands(sub, common)
    _model_commands(sub, common)
    _batch_commands(sub, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        import argcomplete
    except ImportError:  # optional: the `client` extra installs it
        pass
    else:
        argcomplete.autocomplete(parser)
    args = parser.parse_args(argv)
    if not hasattr(args, "json"):
        args.json = False
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:
        # The reader went away (`rowforge tables rows ... | head`): nothing more to say.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except RowForgeError as exc:
        usage = exc.code.name == "INVALID_ARGUMENT"
        return _fail(args, exc.code.name, exc.reason, error_line(exc, args), 2 if usage else 1,
                     exc)
    except FileNotFoundError as exc:
        return _fail(args, "USAGE", "FILE_NOT_FOUND", f"{exc.filename or exc}: no such file", 2)
    except pydantic.ValidationError as exc:
        return _fail(args, "USAGE", "INVALID_INPUT", f"invalid input: {describe_validation(exc)}",
                     2)
    except KeyboardInterrupt:
        abandon_progress()
        return 130
    except Exception as exc:
        if _is_server_side_error(exc):  # `rowforge admin ...` raises the server's errors
            return _fail(args, "USAGE", getattr(exc, "reason", "INVALID_ARGUMENT"),
                         exc.message, 2)  # type: ignore[attr-defined]
        raise


def _fail(args: argparse.Namespace, code: str, reason: str, message: str, status: int,
          exc: RowForgeError | None = None) -> int:
    """Report a failure on stderr (one line, or one JSON object with --json) after taking down
    any progress bar; return the exit status."""
    abandon_progress()
    if args.json:
        sys.stderr.write(_json_error(code, reason, message, exc))
    else:
        print(f"rowforge: {message}", file=sys.stderr)
    return status


def _json_error(code: str, reason: str, message: str, exc: RowForgeError | None = None) -> str:
    error: dict[str, Any] = {"code": code, "reason": reason, "message": message}
    if exc is not None:
        error["message"] = exc.message
        if exc.field_violations:
            error["fieldViolations"] = [{"field": f, "description": d}
                                        for f, d in exc.field_violations]
        if exc.metadata:
            error["metadata"] = dict(exc.metadata)
        if exc.retry_after:
            error["retryAfter"] = exc.retry_after
        request_id = getattr(exc, "request_id", None)
        if request_id:
            error["requestId"] = request_id
    return json.dumps({"error": error}, ensure_ascii=False) + "\n"


def error_line(exc: RowForgeError, args: argparse.Namespace | None = None) -> str:
    """One line: the message, the field violations not already in it, what to do."""
    if exc.reason == "SERVER_NOT_RUNNING":
        return exc.message
    parts = [exc.message]
    for field, description in exc.field_violations:
        if description not in exc.message:
            parts.append(f"{field}: {description}")
    line = "; ".join(parts)
    if exc.code.name != "INVALID_ARGUMENT" or exc.domain:
        detail = exc.code.name
        if exc.reason and exc.reason != exc.code.name:
            detail += f": {exc.reason}"
        line += f" ({detail})"
    if exc.retry_after:
        line += f"; retry after {exc.retry_after:g}s"
    if exc.request_id:
        line += f" [request {exc.request_id}]"
    if exc.code.name == "UNAUTHENTICATED":
        line += "; pass --token or set ROWFORGE_TOKEN (and --project or ROWFORGE_PROJECT_ID)"
    elif exc.code.name == "UNAVAILABLE" and "connect" in exc.message.lower():
        address = getattr(args, "address", None) or os.environ.get("ROWFORGE_ADDRESS") or (
            "127.0.0.1:50051")
        line = f"{cmd.server_hint(address)} ({exc.message})"
    return " ".join(line.split())


def _is_server_side_error(exc: Exception) -> bool:
    try:
        from rowforge.server.errors import RowforgeError
    except ImportError:  # client-only install
        return False
    return isinstance(exc, RowforgeError)

if __name__ == "__main__":
    raise SystemExit(main())
