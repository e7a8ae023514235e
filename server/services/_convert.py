"""Small protobuf <-> Python helpers shared by the servicers."""

from __future__ import annotations

import datetime as dt
from typing import Any

from google.protobuf import json_format, struct_pb2, timestamp_pb2

from rowforge.server.errors import InvalidArgument

#: How deep a Struct sent by a caller may nest (objects and lists); deeper is INVALID_ARGUMENT.
MAX_JSON_DEPTH = 32


def to_value(value: Any) -> struct_pb2.Value:
    """A Python JSON-like value as ``google.protobuf.Value``."""
    out = struct_pb2.Value()
    if value is None:
        out.null_value = struct_pb2.NULL_VALUE
    elif isinstance(value, bool):
        out.bool_value = value
    elif isinstance(value, (int, float)):
        out.number_value = value
    elif isinstance(value, str):
        out.string_value = value
    else:
        json_format.ParseDict(value, out)
    return out


def from_value(value: struct_pb2.Value) -> Any:
    return json_format.MessageToDict(value)


def struct_to_dict(value: struct_pb2.Struct, field: str = "struct") -> dict[str, Any]:
    """A caller's Struct as a dict; INVALID_ARGUMENT naming ``field`` when it nests deeper than
    :data:`MAX_JSON_DEPTH` or holds NaN/infinite numbers (not JSON)."""
    if _depth(value) > MAX_JSON_DEPTH:
        raise InvalidArgument.field(field, f"nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json_format.MessageToDict(value)
    except ValueError:
        raise InvalidArgument.field(field, "holds a NaN or infinite number, which JSON cannot "
                                           "represent") from None


def _depth(value: struct_pb2.Struct | struct_pb2.ListValue) -> int:
    """Nesting depth of a Struct or ListValue (1 for a flat one), iteratively."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_JSON_DEPTH:
            break
        children = node.fields.values() if isinstance(node, struct_pb2.Struct) else node.values
        for child in children:
            kind = child.WhichOneof("kind")
            if kind == "struct_value":
                stack.append((child.struct_value, depth + 1))
            elif kind == "list_value":
                stack.append((child.list_value, depth + 1))
    return deepest


def dict_to_struct(value: dict[str, Any] | None) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    if value:
        out.update(value)
    return out


def timestamp(value: dt.datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    out = timestamp_pb2.Timestamp()
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    out.FromDatetime(value)
    return out
