"""Small protobuf <-> Python helpers shared by the servicers."""

from __future__ import annotations

import datetime as dt
from typing import Any

from google.protobuf import json_format, struct_pb2, timestamp_pb2


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


def struct_to_dict(value: struct_pb2.Struct) -> dict[str, Any]:
    return json_format.MessageToDict(value)


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
