"""protobuf's well-known value types <-> Python: the one codec of ``google.protobuf.Value`` /
``Struct`` / ``ListValue`` and ``Timestamp``, shared by the client and the server.

Typed cell values (``rowforge.v1.CellValue``) have their own module, :mod:`.cell_values`. Numbers
in a ``Value`` are doubles: they come back as ``float``. Depends on protobuf only. Not
generated: ``make proto`` rewrites only ``rowforge/v1``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any, overload

from google.protobuf import struct_pb2, timestamp_pb2

__all__ = [
    "datetime_from_pb",
    "set_value",
    "struct_from_pb",
    "struct_to_pb",
    "timestamp_from_epoch",
    "timestamp_to_pb",
    "value_from_pb",
    "value_to_pb",
]

_NULL = struct_pb2.NULL_VALUE
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
Default = Callable[[Any], Any]


def set_value(out: struct_pb2.Value, value: Any, default: Default | None = None) -> None:
    """Fill ``out`` with a JSON-like Python value in place (cheaper than building and copying).

    Args:
        default: Turns any other value into one of these (as ``json.dumps``'s ``default``);
            without it such a value raises ``TypeError``.
    """
    if isinstance(value, str):
        out.string_value = value
    elif value is None:
        out.null_value = _NULL
    elif isinstance(value, bool):
        out.bool_value = value
    elif isinstance(value, (int, float)):
        out.number_value = value
    elif isinstance(value, Mapping):
        struct = out.struct_value
        struct.Clear()
        struct.SetInParent()  # an empty mapping is still a struct_value
        for k, v in value.items():
            set_value(struct.fields[str(k)], v, default)
    elif isinstance(value, (list, tuple)):
        items = out.list_value
        items.Clear()
        items.SetInParent()
        for v in value:
            set_value(items.values.add(), v, default)
    elif default is not None:
        set_value(out, default(value))
    else:
        raise TypeError(f"unsupported value of type {type(value).__name__}")


def value_to_pb(value: Any, default: Default | None = None) -> struct_pb2.Value:
    """A JSON-like Python value as a ``Value`` (see :func:`set_value`)."""
    out = struct_pb2.Value()
    set_value(out, value, default)
    return out


def struct_to_pb(values: Mapping[str, Any] | None,
                 default: Default | None = None) -> struct_pb2.Struct:
    """A string-keyed mapping as a ``Struct`` (None: an empty one)."""
    out = struct_pb2.Struct()
    for k, v in (values or {}).items():
        set_value(out.fields[str(k)], v, default)
    return out


def value_from_pb(value: struct_pb2.Value) -> Any:
    """A ``Value`` as Python (numbers as ``float``; an unset value is None)."""
    kind = value.WhichOneof("kind")
    if kind is None or kind == "null_value":
        return None
    if kind == "number_value":
        return value.number_value
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return struct_from_pb(value.struct_value)
    return [value_from_pb(v) for v in value.list_value.values]


def struct_from_pb(struct: struct_pb2.Struct) -> dict[str, Any]:
    """A ``Struct`` as a dict."""
    return {k: value_from_pb(v) for k, v in struct.fields.items()}


@overload
def timestamp_to_pb(value: dt.datetime) -> timestamp_pb2.Timestamp: ...
@overload
def timestamp_to_pb(value: None) -> None: ...
def timestamp_to_pb(value: dt.datetime | None) -> timestamp_pb2.Timestamp | None:
    """A datetime as a ``Timestamp`` (naive means UTC; None stays None)."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    delta = value - _EPOCH
    return timestamp_pb2.Timestamp(seconds=delta.days * 86400 + delta.seconds,
                                   nanos=delta.microseconds * 1000)


def fill_timestamp(out: timestamp_pb2.Timestamp, value: dt.datetime) -> None:
    """Set ``out`` in place to ``value`` (naive means UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    delta = value - _EPOCH
    out.seconds = delta.days * 86400 + delta.seconds
    out.nanos = delta.microseconds * 1000


def timestamp_from_epoch(epoch: float | None) -> timestamp_pb2.Timestamp | None:
    """Seconds since the epoch as a ``Timestamp`` (None stays None)."""
    if epoch is None:
        return None
    seconds = int(epoch)
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=int((epoch - seconds) * 1e9))


def datetime_from_pb(ts: timestamp_pb2.Timestamp, present: bool = True) -> dt.datetime | None:
    """A ``Timestamp`` as an aware UTC datetime; unset (``present`` False, or zero) is None."""
    if not present or (ts.seconds == 0 and ts.nanos == 0):
        return None
    return ts.ToDatetime(tzinfo=dt.UTC)
