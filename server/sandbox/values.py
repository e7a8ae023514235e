"""Cell values across the process boundary: packing rows in, checking results out."""

from __future__ import annotations

from typing import Any

import msgpack

from rowforge.server.errors import InvalidArgument
from rowforge.server.sandbox.errors import KINDS, SandboxError

_SCALARS = (str, int, float, bool, type(None), bytes)
_MAX_MESSAGE = 4000
ALLOWED_TEXT = "str, int, float, bool, None, bytes, or lists and dicts (with str keys) of these"


def pack_job(code: str, row: dict[str, Any]) -> bytes:
    """The payload frame body for one cell.

    Raises:
        InvalidArgument: a row key is not a string or a value cannot cross the boundary.
    """
    for key in row:
        if not isinstance(key, str):
            raise InvalidArgument.field("row", f"column names must be strings, not {key!r}")
    try:
        return msgpack.packb({"code": code, "row": row}, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidArgument.field(
            "row", f"holds a value a Python column cannot receive ({exc}); use {ALLOWED_TEXT}"
        ) from None


def _malformed(column: str) -> SandboxError:
    return SandboxError("crashed", f"Python column {column!r} sent back a malformed result")


def check_value(value: Any, column: str) -> None:
    """Raise :class:`SandboxError` unless ``value`` is plain data (iterative: no depth limit)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, _SCALARS):
            continue
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            for key, sub in item.items():
                if not isinstance(key, str):
                    raise SandboxError(
                        "exception", f"Python column {column!r} assigned a dict with the "
                        f"non-string key {key!r:.100}; use {ALLOWED_TEXT}")
                stack.append(sub)
        else:
            raise SandboxError("exception", f"Python column {column!r} assigned a value of type "
                               f"{type(item).__name__}; use {ALLOWED_TEXT}")


def decode_result(body: bytes, column: str) -> Any:
    """The value from a cell's result frame, or the cell's error raised as SandboxError.

    The frame comes from the cell process, which runs untrusted code: it is parsed as data
    only, and anything unexpected is a ``crashed`` cell error, never an exception of ours.
    """
    try:
        message = msgpack.unpackb(body, raw=False, strict_map_key=False)
    except Exception:
        raise _malformed(column) from None
    if not isinstance(message, dict):
        raise _malformed(column)
    if message.get("ok") is True and "value" in message:
        value = message["value"]
        check_value(value, column)
        return value
    kind, text = message.get("kind"), message.get("message")
    if message.get("ok") is False and kind in KINDS and isinstance(text, str):
        raise SandboxError(kind, text[:_MAX_MESSAGE])
    raise _malformed(column)
