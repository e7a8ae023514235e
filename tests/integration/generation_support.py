"""Helpers for the generation RPC tests (real server, generated stubs)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2

from rowforge.v1 import common_pb2, file_service_pb2, file_service_pb2_grpc, table_service_pb2_grpc
from rowforge.v1 import table_service_pb2 as pb

ACTION, KNOWLEDGE, CHAT = (common_pb2.TABLE_TYPE_ACTION, common_pb2.TABLE_TYPE_KNOWLEDGE,
                           common_pb2.TABLE_TYPE_CHAT)
Metadata = tuple[tuple[str, str], ...]
DONE, ERROR, SKIPPED = pb.CELL_STATUS_DONE, pb.CELL_STATUS_ERROR, pb.CELL_STATUS_SKIPPED
PENDING, RUNNING = pb.CELL_STATUS_PENDING, pb.CELL_STATUS_RUNNING


@pytest.fixture
def md() -> Metadata:
    """A fresh project per test (auth is off: x-project-id selects it)."""
    return (("x-project-id", f"gen-{uuid.uuid4().hex[:12]}"),)


@pytest.fixture
async def stub(channel: grpc.aio.Channel) -> table_service_pb2_grpc.TableServiceStub:
    return table_service_pb2_grpc.TableServiceStub(channel)


def struct(values: Mapping[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(dict(values))
    return out


def input_col(name: str, dtype: str = "str") -> pb.Column:
    return pb.Column(id=name, dtype=dtype)


def llm_col(name: str, prompt: str = "", **kw: Any) -> pb.Column:
    return pb.Column(id=name, dtype="str", gen_config=pb.GenConfig(
        llm=pb.LLMGenConfig(prompt=prompt, **kw)))


def python_col(name: str, code: str, dtype: str = "str") -> pb.Column:
    return pb.Column(id=name, dtype=dtype, gen_config=pb.GenConfig(
        python=pb.PythonGenConfig(python_code=code)))


async def create_table(stub: Any, md: Metadata, table_id: str, cols: Iterable[pb.Column],
                       table_type: int = ACTION) -> pb.Table:
    reply = await stub.CreateTable(pb.CreateTableRequest(
        table_type=table_type, table_id=table_id, cols=list(cols)), metadata=md)
    return reply.table


async def add_rows(stub: Any, md: Metadata, table_id: str, rows: Iterable[Mapping[str, Any]],
                   table_type: int = ACTION, **kw: Any) -> pb.AddRowsResponse:
    return await stub.AddRows(pb.AddRowsRequest(
        table_type=table_type, table_id=table_id, data=[struct(r) for r in rows], **kw),
        metadata=md)


async def stream_add_rows(stub: Any, md: Metadata, table_id: str,
                          rows: Iterable[Mapping[str, Any]], table_type: int = ACTION,
                          **kw: Any) -> list[pb.StreamAddRowsResponse]:
    call = stub.StreamAddRows(pb.StreamAddRowsRequest(
        table_type=table_type, table_id=table_id, data=[struct(r) for r in rows], **kw),
        metadata=md)
    return [message async for message in call]


async def get_row(stub: Any, md: Metadata, table_id: str, row_id: str,
                  table_type: int = ACTION) -> pb.Row:
    reply = await stub.GetRow(pb.GetRowRequest(table_type=table_type, table_id=table_id,
                                               row_id=row_id), metadata=md)
    return reply.row


async def list_rows(stub: Any, md: Metadata, table_id: str, table_type: int = ACTION,
                    **kw: Any) -> pb.ListRowsResponse:
    return await stub.ListRows(pb.ListRowsRequest(table_type=table_type, table_id=table_id,
                                                  **kw), metadata=md)


async def upload(channel: grpc.aio.Channel, md: Metadata, name: str, data: bytes,
                 content_type: str = "") -> str:
    """Upload a file through FileService; its URI."""
    stub = file_service_pb2_grpc.FileServiceStub(channel)

    async def parts() -> AsyncIterator[file_service_pb2.UploadFileRequest]:
        yield file_service_pb2.UploadFileRequest(metadata=file_service_pb2.FileMetadata(
            name=name, content_type=content_type, size=len(data)))
        for start in range(0, len(data), 64 * 1024):
            yield file_service_pb2.UploadFileRequest(chunk=data[start:start + 64 * 1024])

    reply = await stub.UploadFile(parts(), metadata=md)
    return reply.file.uri


async def download(channel: grpc.aio.Channel, md: Metadata, uri: str) -> tuple[bytes, str]:
    """(content, content type) of a stored file."""
    stub = file_service_pb2_grpc.FileServiceStub(channel)
    content = bytearray()
    content_type = ""
    async for message in stub.DownloadFile(file_service_pb2.DownloadFileRequest(uri=uri),
                                           metadata=md):
        if message.WhichOneof("part") == "file":
            content_type = message.file.content_type
        else:
            content += message.chunk
    return bytes(content), content_type


def value(cell: pb.Cell | pb.CellCompletion) -> Any:
    """A cell's Value as Python (None for null)."""
    kind = cell.value.WhichOneof("kind")
    return None if kind in (None, "null_value") else getattr(cell.value, kind)


