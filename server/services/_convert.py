"""Checks of caller-sent protobuf values shared by the servicers (conversions: ``rowforge.codec``)."""

from __future__ import annotations

import math
from typing import Any

from google.protobuf import struct_pb2

from rowforge import codec
from rowforge.server.errors import InvalidArgument

#: How deep a Struct sent by a caller may nest (objects and lists); deeper is INVALID_ARGUMENT.
MAX_JSON_DEPTH = 32


def struct_to_dict(value: struct_pb2.Struct, field: str = "struct") -> dict[str, Any]:
    """A caller's Struct as a dict; INVALID_ARGUMENT naming ``field`` when it nests deeper than
    :data:`MAX_JSON_DEPTH` or holds NaN/infinite numbers (not JSON)."""
    depth, finite = _walk(value)
    if depth > MAX_JSON_DEPTH:
        raise InvalidArgument.field(field, f"nests deeper than {MAX_JSON_DEPTH} levels")
    if not finite:
        raise InvalidArgument.field(field, "holds a NaN or infinite number, which JSON cannot "
                                           "represent")
    return codec.struct_from_pb(value)


def _walk(value: struct_pb2.Struct | struct_pb2.ListValue) -> tuple[int, bool]:
    """Nesting depth of a Struct or ListValue (1 for a flat one), and whether every number
    in it is finite; iteratively."""
    deepest = 0
    finite = True
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
            elif kind == "number_value" and not math.isfinite(child.number_value):
                finite = False
    return deepest, finite
