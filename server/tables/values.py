"""Typing of cell values: what each dtype accepts on input, how it is stored and read back.

Strict but clear: a str column takes strings only (no silent number-to-text coercion); an int
column takes integers and integral doubles below 2^53 (protobuf Struct numbers are doubles, so
``3.0`` arrives for 3; a larger double may be a rounded integer) but refuses ``3.5``; float takes finite numbers; bool takes true/false; file,
image and audio take FileService URI strings. NULL is allowed everywhere. Embedding vectors are
stored as little-endian float32 bytes: a non-empty flat list of finite numbers (float32-finite:
1e39 is refused too), of the column's recorded length (:func:`check_vector`); in CSV/TSV a
JSON list.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from rowforge.server.tables.model import EMBEDDING_DTYPE, FILE_DTYPES

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
#: Integral doubles below this are unambiguous; from it on, one may be a rounded integer.
MAX_EXACT_DOUBLE = 2**53
#: Largest str value accepted in a cell (characters).
MAX_TEXT_CHARS = 8 * 1024 * 1024


class ValueTypeError(ValueError):
    """A value does not fit a column's dtype (the message says why, for the caller)."""


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def coerce(dtype: str, value: Any) -> Any:
    """``value`` as stored for ``dtype``.

    Raises:
        ValueTypeError: the value does not fit.
    """
    if value is None:
        return None
    if dtype == "str" or dtype in FILE_DTYPES:
        if not isinstance(value, str):
            what = "a FileService URI string" if dtype in FILE_DTYPES else "a string"
            raise ValueTypeError(f"expected {what}, got {_type_name(value)}")
        if len(value) > MAX_TEXT_CHARS:
            raise ValueTypeError(f"text longer than {MAX_TEXT_CHARS} characters")
        if "\x00" in value:
            raise ValueTypeError("text must not contain NUL characters")
        return value
    if dtype == "int":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueTypeError(f"expected an integer, got {_type_name(value)}")
        if isinstance(value, float):
            if not value.is_integer():
                raise ValueTypeError(f"expected an integer, got {value!r}")
            if abs(value) >= MAX_EXACT_DOUBLE:
                # A double this large may already be a rounded integer: never store a guess.
                raise ValueTypeError("an integer of ±2^53 or more sent as a double (a "
                                     "google.protobuf.Value number) may have been rounded; "
                                     "send it exactly as a typed int (CellValue.int_value)")
            value = int(value)
        if not INT64_MIN <= value <= INT64_MAX:
            raise ValueTypeError("integer out of the 64-bit range")
        return value
    if dtype == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueTypeError(f"expected a number, got {_type_name(value)}")
        value = float(value)
        if not math.isfinite(value):
            raise ValueTypeError("expected a finite number")
        return value
    if dtype == "bool":
        if not isinstance(value, bool):
            raise ValueTypeError(f"expected true or false, got {_type_name(value)}")
        return value
    if dtype == EMBEDDING_DTYPE:
        if isinstance(value, (bytes, bytearray)):
            if len(value) % 4:
                raise ValueTypeError("embedding bytes must be float32s")
            vector = np.frombuffer(value, dtype="<f4")
        else:
            if not isinstance(value, (list, tuple)):
                raise ValueTypeError(f"expected a list of numbers, got {_type_name(value)}")
            try:
                # Beyond float32 becomes inf (refused below) with a numpy RuntimeWarning: an
                # error where warnings are errors. (np.errstate would cost more than the
                # conversion: this runs for every generated vector.)
                vector = np.asarray(value, dtype="<f4")
            except RuntimeWarning:
                raise ValueTypeError("expected finite numbers (beyond float32)") from None
            except (TypeError, ValueError):
                raise ValueTypeError("expected a flat list of numbers") from None
        if vector.ndim != 1 or not vector.size:
            raise ValueTypeError("expected a non-empty flat list of numbers")
        if not np.isfinite(vector).all():
            bad = int(np.flatnonzero(~np.isfinite(vector))[0])
            raise ValueTypeError(f"expected finite numbers (element {bad} is NaN, infinite or "
                                 "beyond float32)")
        return vector.tobytes()
    raise ValueTypeError(f"unknown dtype {dtype!r}")


def check_vector(data: bytes, dimension: int) -> None:
    """Check a stored-form vector against its column's ``dimension`` (0: not recorded).

    Raises:
        ValueTypeError: another length.
    """
    if dimension and len(data) != 4 * dimension:
        raise ValueTypeError(f"expected {dimension} numbers (the column's embedding size), "
                             f"got {len(data) // 4}")


def parse_text(dtype: str, text: str) -> Any:
    """A CSV/TSV field as a value of ``dtype`` (empty field: NULL).

    Raises:
        ValueTypeError: the text does not parse as the dtype.
    """
    if text == "":
        return None
    if dtype == "int":
        try:
            return coerce("int", int(text.strip()))
        except ValueError:
            try:
                return coerce("int", float(text.strip()))
            except ValueError:
                raise ValueTypeError(f"expected an integer, got {text[:40]!r}") from None
    if dtype == "float":
        try:
            return coerce("float", float(text.strip()))
        except ValueError:
            raise ValueTypeError(f"expected a number, got {text[:40]!r}") from None
    if dtype == "bool":
        lowered = text.strip().lower()
        if lowered in {"true", "1", "yes"}:
            return True
        if lowered in {"false", "0", "no"}:
            return False
        raise ValueTypeError(f"expected true or false, got {text[:40]!r}")
    if dtype == EMBEDDING_DTYPE:
        try:
            return coerce(dtype, json.loads(text))
        except ValueError as exc:
            if isinstance(exc, ValueTypeError):
                raise
            raise ValueTypeError(f"expected a JSON list of numbers, got {text[:40]!r}") from None
    return coerce(dtype, text)


def to_text(value: Any) -> str:
    """A stored value as a CSV/TSV field (NULL: empty)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, list):
        return json.dumps(value)
    return str(value)


def from_stored(dtype: str, value: Any) -> Any:
    """A value read from SQL as the domain sees it (embedding bytes -> list of floats)."""
    if value is None:
        return None
    if dtype == EMBEDDING_DTYPE:
        return np.frombuffer(value, dtype="<f4").tolist()
    if dtype == "bool":
        return bool(value)
    return value
