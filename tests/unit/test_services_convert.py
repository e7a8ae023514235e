"""Structs from callers: NaN/infinity and nesting beyond the limit are INVALID_ARGUMENT."""

from __future__ import annotations

import math

import pytest
from google.protobuf import struct_pb2

from rowforge.server.errors import InvalidArgument
from rowforge.server.services._convert import MAX_JSON_DEPTH, struct_to_dict


def nested(depth: int) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    node = out
    for _ in range(depth - 1):
        node = node.fields["k"].struct_value
    node.fields["leaf"].string_value = "x"
    return out


def test_nesting_up_to_the_limit_is_read() -> None:
    value = struct_to_dict(nested(MAX_JSON_DEPTH))
    for _ in range(MAX_JSON_DEPTH - 1):
        value = value["k"]
    assert value == {"leaf": "x"}


@pytest.mark.parametrize("bad, why", [
    (nested(MAX_JSON_DEPTH + 1), "nests deeper"),
    (struct_pb2.Struct(fields={"n": struct_pb2.Value(number_value=math.nan)}), "NaN"),
    (struct_pb2.Struct(fields={"n": struct_pb2.Value(number_value=math.inf)}), "infinite"),
])
def test_bad_structs_name_the_field(bad: struct_pb2.Struct, why: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        struct_to_dict(bad, "requests[3].metadata")
    assert exc.value.message.startswith("requests[3].metadata: ") and why in exc.value.message
