"""Typed cell values (``rowforge.v1.CellValue``) both ways: the one conversion of cell values,
shared by the client and the server.

A ``CellValue`` carries each kind exactly: Python ``int`` as ``int_value`` (the whole int64
range; anything wider is refused, never rounded), ``float`` as ``double_value``, ``str`` as
``string_value`` (or ``file_uri`` for the file, image and audio columns), ``bool``, None, and
lists / string-keyed mappings (embedding vectors, JSON) nested. Reading gives the same Python
values back (``file_uri`` as its string).

Cells are filled in place (:func:`set_cell_value`): tables stream one value per generated cell,
and filling a field of the message being built is several times cheaper than building a
message and copying it in. Depends on protobuf and the generated ``common_pb2`` only (the
client's base install). Not generated: ``make proto`` rewrites only ``rowforge/v1``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.protobuf import struct_pb2

from rowforge.v1 import common_pb2

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "CellValueError",
    "cell_value_from_pb",
    "cell_value_to_pb",
    "row_values_from_pb",
    "row_values_to_pb",
    "set_cell_value",
]

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_NULL = struct_pb2.NULL_VALUE


class CellValueError(ValueError):
    """A row's value that a ``CellValue`` cannot carry; ``column`` names it."""

    def __init__(self, column: str, message: str) -> None:
        super().__init__(f"{column}: {message}")
        self.column = column
        self.message = message


def set_cell_value(out: common_pb2.CellValue, value: Any, *, file: bool = False) -> None:
    """Set ``out`` (a fresh or cleared message) to ``value``; ``file``: a string is a file
    reference (``file_uri``).

    Raises:
        ValueError: an int outside int64 (it would not fit, and rounding is not an option).
        TypeError: a type a cell cannot hold (bytes, a date, an object ...).
    """
    if isinstance(value, str):
        if file:
            out.file_uri = value
        else:
            out.string_value = value
    elif value is None:
        out.null_value = _NULL
    elif isinstance(value, bool):
        out.bool_value = value
    elif isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            raise ValueError(f"integer {value} is outside the 64-bit range")
        out.int_value = value
    elif isinstance(value, float):
        out.double_value = value
    elif isinstance(value, Mapping):
        fields = out.struct_value.fields
        out.struct_value.SetInParent()  # an empty mapping is still an object
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"object keys must be strings, got {type(key).__name__}")
            set_cell_value(fields[key], item)
    elif isinstance(value, (list, tuple)):
        items = out.list_value.values
        out.list_value.SetInParent()  # an empty list is still a list
        for item in value:
            set_cell_value(items.add(), item)
    else:
        raise TypeError(f"a cell cannot hold {type(value).__name__}")


def cell_value_to_pb(value: Any, *, file: bool = False) -> common_pb2.CellValue:
    """``value`` as a new ``CellValue`` (see :func:`set_cell_value`)."""
    out = common_pb2.CellValue()
    set_cell_value(out, value, file=file)
    return out


def cell_value_from_pb(value: common_pb2.CellValue) -> Any:
    """A ``CellValue`` as Python: ints stay ints; nothing set is None."""
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value
    if kind is None or kind == "null_value":
        return None
    if kind == "int_value":
        return value.int_value
    if kind == "double_value":
        return value.double_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "file_uri":
        return value.file_uri
    if kind == "list_value":
        return [cell_value_from_pb(v) for v in value.list_value.values]
    return {k: cell_value_from_pb(v) for k, v in value.struct_value.fields.items()}


def row_values_to_pb(values: Mapping[str, Any],
                     files: frozenset[str] | set[str] = frozenset()) -> common_pb2.RowValues:
    """A row (column id to value) as ``RowValues``; ``files`` names the file-like columns.

    Raises:
        CellValueError: a value :func:`set_cell_value` refuses.
    """
    out = common_pb2.RowValues()
    cells = out.values
    for column, value in values.items():
        try:
            set_cell_value(cells[str(column)], value, file=column in files)
        except (ValueError, TypeError) as exc:
            raise CellValueError(str(column), str(exc)) from None
    return out


def row_values_from_pb(row: common_pb2.RowValues) -> dict[str, Any]:
    """``RowValues`` as a dict (see :func:`cell_value_from_pb`)."""
    return {column: cell_value_from_pb(value) for column, value in row.values.items()}
