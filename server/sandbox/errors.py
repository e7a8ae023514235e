"""The one error a Python cell produces: data for the cell, not an RPC failure."""

from __future__ import annotations

from typing import Final

#: Every value ``SandboxError.kind`` can take.
KINDS: Final = frozenset(
    {"timeout", "memory", "exit", "output_too_large", "crashed", "exception", "no_output",
     "forbidden"}
)


class SandboxError(Exception):
    """A Python cell failed; the message says why in words the table's owner can act on.

    Attributes:
        kind: One of :data:`KINDS`: ``timeout`` (wall clock or CPU limit), ``memory``,
            ``exit`` (``sys.exit``/``os._exit`` with a failure status), ``output_too_large``,
            ``crashed`` (killed by a signal, or the sandbox itself failed), ``exception``
            (an uncaught exception, a syntax error or a value that cannot be stored),
            ``no_output`` (``row[column]`` was never assigned), ``forbidden`` (an uncaught
            ``PermissionError``: the code touched something outside its sandbox).
        message: English, e.g. ``Python column 'x' timed out after 10 s``.
    """

    def __init__(self, kind: str, message: str) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown sandbox error kind {kind!r}")
        super().__init__(message)
        self.kind = kind
        self.message = message

    def __repr__(self) -> str:
        return f"SandboxError(kind={self.kind!r}, message={self.message!r})"
