"""Exceptions shared by the compiled kernels and their pure-Python twins.

They live in a plain module so that ``except MissingReferenceError`` catches the error whichever
implementation raised it.
"""

from __future__ import annotations


class MissingReferenceError(KeyError):
    """A template references a column the row does not have.

    Attributes:
        column: The referenced column name, exactly as written between ``${`` and ``}``.
    """

    def __init__(self, column: str) -> None:
        super().__init__(column)
        self.column = column

    def __str__(self) -> str:
        # KeyError.__str__ would print only repr(column); say what is wrong instead.
        return f"template references ${{{self.column}}} but the row has no column {self.column!r}"


class IndexCorrupt(Exception):
    """A persisted ANN index cannot be trusted: missing sidecar, checksum or format mismatch.

    The database holds the vectors, so the caller's remedy is always to rebuild the index.

    Attributes:
        path: The index file concerned.
    """

    def __init__(self, path: str, detail: str) -> None:
        super().__init__(f"ANN index {path!r} is unusable: {detail}")
        self.path = path
        self.detail = detail

    def __reduce__(self) -> tuple[type[IndexCorrupt], tuple[str, str]]:
        return (type(self), (self.path, self.detail))
