"""Checking a Python column's code when the column is defined, before any row runs."""

from __future__ import annotations

from rowforge.server.errors import InvalidArgument

#: Larger code is refused: compiling is done in the server process.
MAX_CODE_BYTES = 256 * 1024


def check_code(code: str, *, field: str = "python_code") -> None:
    """Raise ``InvalidArgument`` (naming ``field`` and the line) unless ``code`` compiles.

    Compiling never runs the code; the size cap bounds what the parser may cost.
    """
    if not isinstance(code, str):
        raise InvalidArgument.field(field, "must be a string")
    size = len(code.encode("utf-8", "surrogatepass"))
    if size > MAX_CODE_BYTES:
        raise InvalidArgument.field(field, f"is {size} bytes; at most {MAX_CODE_BYTES} allowed")
    try:
        compile(code, "<python column>", "exec", dont_inherit=True)
    except SyntaxError as exc:
        at = f" (line {exc.lineno})" if exc.lineno else ""
        raise InvalidArgument.field(field, f"{exc.msg}{at}") from None
    except (ValueError, RecursionError, MemoryError) as exc:  # null bytes, deep nesting
        raise InvalidArgument.field(field, f"cannot be compiled: {exc}") from None
