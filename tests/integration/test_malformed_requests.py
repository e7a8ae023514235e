"""Requests protobuf cannot decode are INVALID_ARGUMENT (MALFORMED_REQUEST), never UNKNOWN.

Garbage bytes, nesting beyond protobuf's recursion limit, and a corrupt message in the middle
of a client stream, sent as raw bytes over a real channel; the server logs one WARNING per
request and no error.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from rowforge.v1 import file_service_pb2 as fpb
from tests.conftest import assert_no_unhandled_errors
from tests.support.server import ServerProcess
from tests.support.status import details

MD = (("x-project-id", "malformed"),)


def nested_value(depth: int) -> bytes:
    """A google.protobuf.Value holding lists ``depth`` levels deep (wire bytes)."""
    inner = b"\x08\x00"  # null_value
    for _ in range(depth):
        list_value = b"\x0a" + _varint(len(inner)) + inner  # ListValue.values[0]
        inner = b"\x32" + _varint(len(list_value)) + list_value  # Value.list_value
    return inner


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


@pytest.fixture(scope="module")
def channel_to(server: ServerProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.address) as ch:
        yield ch


@pytest.mark.parametrize("method, payload", [
    ("/rowforge.v1.TableService/ListTables", b"\xff\xff\xff"),
    ("/rowforge.v1.TableService/AddRows", b"\x0a\x0a\x0a"),  # a length past the end
    ("/rowforge.v1.ModelService/ListModels", b"\x07"),  # an invalid wire type
    # AddRowsRequest.rows (field 3) holding a Struct whose one field nests lists 300 deep.
    ("/rowforge.v1.TableService/AddRows", None),
])
def test_undecodable_unary_requests(channel_to: grpc.Channel, method: str,
                                    payload: bytes | None) -> None:
    if payload is None:
        value = nested_value(300)
        entry = b"\x0a\x01k" + b"\x12" + _varint(len(value)) + value  # Struct.fields map entry
        struct = b"\x0a" + _varint(len(entry)) + entry
        payload = b"\x1a" + _varint(len(struct)) + struct
    with pytest.raises(grpc.RpcError) as exc:
        channel_to.unary_unary(method)(payload, metadata=MD, timeout=10)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT, exc.value.details()
    assert "could not be decoded" in exc.value.details()
    assert details(exc.value)[0] == "MALFORMED_REQUEST"


def test_a_corrupt_message_mid_stream(channel_to: grpc.Channel, server: ServerProcess) -> None:
    first = fpb.UploadFileRequest(metadata=fpb.FileMetadata(name="a.txt")).SerializeToString()
    upload = channel_to.stream_unary("/rowforge.v1.FileService/UploadFile")
    with pytest.raises(grpc.RpcError) as exc:
        upload(iter([first, b"\xff\xfe\xfd"]), metadata=MD, timeout=10)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT, exc.value.details()
    assert details(exc.value)[0] == "MALFORMED_REQUEST"
    # The server kept serving and logged warnings, not errors.
    listed = channel_to.unary_unary("/rowforge.v1.TableService/ListTables")(
        b"", metadata=MD, timeout=10)
    assert isinstance(listed, bytes)
    warnings = [e for e in server.logs() if "undecodable request" in str(e.get("msg", ""))]
    assert warnings and all(e["level"] == "warning" for e in warnings)
    assert not [e for e in server.logs() if e.get("level") == "error"]
    assert_no_unhandled_errors(server)
