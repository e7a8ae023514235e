"""CSV/TSV import and export, incremental in both directions.

:class:`DelimitedReader` is a push parser over the standard ``csv`` module: bytes arrive in
chunks of any size (a chunk may end mid-character, mid-line or inside a quoted multi-line
field); complete records come out with the line they start on. It re-parses only the
unfinished tail, so memory stays bounded by the longest record. Malformed input (unterminated
quote, stray quote, invalid UTF-8) raises :class:`DelimitedError` with a line number.

:func:`typed_rows` turns the records into typed row dicts for a table (header line = column
ids; ``ID`` and ``Updated at`` columns, as exported, are ignored; embedding vectors are JSON
lists, as exported), and :class:`DelimitedWriter` formats rows for export.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Iterator, Sequence
from typing import Any

from rowforge.server.errors import InvalidArgument, Violations
from rowforge.server.tables.model import (
    ID_COLUMN,
    RESERVED_COLUMNS,
    UPDATED_AT_COLUMN,
    ColumnSchema,
    Row,
    TableSchema,
)
from rowforge.server.tables.values import ValueTypeError, parse_text, to_text

DELIMITERS = {"csv": ",", "tsv": "\t"}


class DelimitedError(ValueError):
    """Malformed CSV/TSV input."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line
        self.message = message


class _Lines:
    """Iterator over a list of lines that counts how many were taken."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        self.taken = 0

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        if self.taken >= len(self.lines):
            raise StopIteration
        self.taken += 1
        return self.lines[self.taken - 1]


class DelimitedReader:
    """Incremental CSV/TSV parser: :meth:`feed` bytes, then :meth:`close`.

    Both return ``(line_number, fields)`` records (1-based line of the record's start).
    """

    def __init__(self, fmt: str = "csv") -> None:
        self.delimiter = DELIMITERS[fmt]
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="strict")
        self._partial = ""  # text after the last newline
        self._lines: list[str] = []  # complete lines not yet part of a complete record
        self._first_line = 1  # line number of self._lines[0]
        self.bytes_read = 0

    def feed(self, data: bytes) -> list[tuple[int, list[str]]]:
        self.bytes_read += len(data)
        try:
            text = self._decoder.decode(data)
        except UnicodeDecodeError as exc:
            line = self._first_line + len(self._lines) + data[:max(exc.start, 0)].count(b"\n")
            raise DelimitedError(line, f"invalid UTF-8 ({exc.reason})") from None
        if not text:
            return []
        parts = (self._partial + text).split("\n")
        self._partial = parts.pop()
        self._lines.extend(p + "\n" for p in parts)
        return self._parse(final=False)

    def close(self) -> list[tuple[int, list[str]]]:
        try:
            tail = self._decoder.decode(b"", final=True)
        except UnicodeDecodeError as exc:
            raise DelimitedError(self._first_line + len(self._lines),
                                 f"invalid UTF-8 ({exc.reason})") from None
        rest = self._partial + tail
        self._partial = ""
        if rest:
            self._lines.append(rest)
        return self._parse(final=True)

    def _parse(self, *, final: bool) -> list[tuple[int, list[str]]]:
        lines = _Lines(self._lines)
        reader = csv.reader(lines, delimiter=self.delimiter, strict=True)
        records: list[tuple[int, list[str]]] = []
        done = 0
        try:
            for fields in reader:
                if fields:  # csv yields [] for blank lines
                    records.append((self._first_line + done, fields))
                done = lines.taken
        except csv.Error as exc:
            if final or "unexpected end of data" not in str(exc):
                raise DelimitedError(self._first_line + lines.taken - 1 if lines.taken else
                                     self._first_line, str(exc)) from None
        self._first_line += done
        del self._lines[:done]
        return records


def _header(schema: TableSchema, fields: list[str]) -> list[ColumnSchema | None]:
    """The columns of the header line (None for ignored ID / Updated at columns)."""
    v = Violations()
    out: list[ColumnSchema | None] = []
    seen: set[str] = set()
    for i, name in enumerate(fields):
        name = name.strip()
        if name in seen:
            v.add("header", f"column {name!r} appears twice")
        seen.add(name)
        if name in RESERVED_COLUMNS:
            out.append(None)
            continue
        col = schema.column(name)
        if col is None:
            valid = ", ".join(repr(c) for c in schema.column_ids)
            v.add("header", f"field {i + 1}: unknown column {name!r} (columns: {valid})")
        out.append(col)
    if not any(c is not None for c in out) and not v.items:
        v.add("header", "the first line must name at least one column of the table")
    v.raise_if_any()
    return out


class RowTyper:
    """Turns records into typed row dicts for ``schema``; the first record is the header.

    A typed row omits generated columns whose field is empty, so they get generated.
    """

    def __init__(self, schema: TableSchema, max_errors: int = 20) -> None:
        self.schema = schema
        self.columns: list[ColumnSchema | None] | None = None
        self.violations = Violations()
        self.max_errors = max_errors

    def add(self, line: int, fields: list[str]) -> dict[str, Any] | None:
        if self.columns is None:
            self.columns = _header(self.schema, fields)
            return None
        if len(fields) != len(self.columns):
            self._bad(line, f"expected {len(self.columns)} fields, got {len(fields)}")
            return None
        row: dict[str, Any] = {}
        for col, text in zip(self.columns, fields, strict=True):
            if col is None:
                continue
            if text == "" and col.gen_config is not None:
                continue
            try:
                row[col.id] = parse_text(col.dtype, text)
            except ValueTypeError as exc:
                self._bad(line, f"column {col.id!r} ({col.dtype}): {exc}")
        return row

    def _bad(self, line: int, description: str) -> None:
        self.violations.add(f"line {line}", description)
        if len(self.violations.items) >= self.max_errors:
            self.violations.raise_if_any()

    def finish(self) -> None:
        if self.columns is None:
            raise InvalidArgument.field("chunk", "the file is empty: the first line must name "
                                                 "the columns", reason="EMPTY_IMPORT")
        self.violations.raise_if_any()


#: A spreadsheet runs a field starting with one of these as a formula (OWASP: CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralize(value: Any, text: str) -> str:
    """``text`` with a leading ``'`` when ``value`` is a string a spreadsheet would run as a
    formula. Numbers stay as they are (``-5`` is a number, not a formula)."""
    if isinstance(value, str) and text.startswith(FORMULA_STARTS):
        return "'" + text
    return text


class DelimitedWriter:
    """Formats rows as CSV/TSV text: ID, Updated at, then the chosen columns in order.

    Text values that would start a formula get a leading ``'`` (:func:`neutralize`) unless
    ``raw`` is true.
    """

    def __init__(self, fmt: str, columns: Sequence[ColumnSchema], *, raw: bool = False) -> None:
        self.columns = list(columns)
        self.raw = raw
        self._buffer = io.StringIO()
        self._writer = csv.writer(self._buffer, delimiter=DELIMITERS[fmt])

    def header(self) -> str:
        return self._format([[ID_COLUMN, UPDATED_AT_COLUMN, *(c.id for c in self.columns)]])

    def rows(self, rows: Sequence[Row]) -> str:
        return self._format([
            [row.id, row.update_time.isoformat().replace("+00:00", "Z"),
             *(self._field(row.cells[c.id].value) for c in self.columns)]
            for row in rows])

    def _field(self, value: Any) -> str:
        text = to_text(value)
        return text if self.raw else neutralize(value, text)

    def _format(self, records: list[list[str]]) -> str:
        self._buffer.seek(0)
        self._buffer.truncate()
        self._writer.writerows(records)
        return self._buffer.getvalue()
