"""Closed-set strings have enums beside them (compatibly: the strings still work and are still
filled): Column.data_type, ChatMessage.chat_role, FileInfo.file_kind; a request sending both
must make them agree, and an enum's zero value never stands for a choice."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from rowforge.clients import RowForge
from rowforge.v1 import common_pb2, model_service_pb2_grpc, table_service_pb2_grpc
from rowforge.v1 import model_service_pb2 as mpb
from rowforge.v1 import table_service_pb2 as tpb
from tests.support.server import ServerProcess
from tests.support.status import details

ACTION = common_pb2.TABLE_TYPE_ACTION


@pytest.fixture(scope="module")
def channel(server: ServerProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.address) as ch:
        yield ch


def test_column_data_type(channel: grpc.Channel) -> None:
    tables = table_service_pb2_grpc.TableServiceStub(channel)
    created = tables.CreateTable(tpb.CreateTableRequest(
        table_type=ACTION, table_id="enums_t", cols=[
            tpb.Column(id="n", data_type=tpb.DATA_TYPE_INT),
            tpb.Column(id="s", dtype="str"),
            tpb.Column(id="f", dtype="float", data_type=tpb.DATA_TYPE_FLOAT),
            tpb.Column(id="plain")])).table
    cols = {c.id: (c.dtype, c.data_type) for c in created.cols}
    assert cols == {"ID": ("str", tpb.DATA_TYPE_STR),
                    "Updated at": ("datetime", tpb.DATA_TYPE_DATETIME),
                    "n": ("int", tpb.DATA_TYPE_INT), "s": ("str", tpb.DATA_TYPE_STR),
                    "f": ("float", tpb.DATA_TYPE_FLOAT), "plain": ("str", tpb.DATA_TYPE_STR)}
    with pytest.raises(grpc.RpcError) as caught:
        tables.CreateTable(tpb.CreateTableRequest(table_type=ACTION, table_id="enums_bad", cols=[
            tpb.Column(id="n", dtype="str", data_type=tpb.DATA_TYPE_INT)]))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    reason, _, fields = details(caught.value)
    assert reason == "INVALID_DTYPE" and "disagree" in fields["cols[0].data_type"]


def test_chat_role(channel: grpc.Channel) -> None:
    models = model_service_pb2_grpc.ModelServiceStub(channel)
    reply = models.CreateChatCompletion(mpb.CreateChatCompletionRequest(
        model="rowforge/chat", max_tokens=10,
        messages=[mpb.ChatMessage(chat_role=mpb.CHAT_ROLE_USER, content="Hello")]))
    answer = reply.completion.message
    assert answer.content and (answer.role, answer.chat_role) == ("assistant",
                                                                  mpb.CHAT_ROLE_ASSISTANT)
    for message, field in [(mpb.ChatMessage(content="Hello"), "messages[0].role"),
                           (mpb.ChatMessage(role="user", chat_role=mpb.CHAT_ROLE_SYSTEM,
                                            content="Hello"), "messages[0].chat_role")]:
        with pytest.raises(grpc.RpcError) as caught:
            models.CreateChatCompletion(mpb.CreateChatCompletionRequest(
                model="rowforge/chat", messages=[message]))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in details(caught.value)[2]


def test_file_kind(server: ServerProcess) -> None:
    from rowforge.v1 import file_service_pb2 as fpb
    from rowforge.v1 import file_service_pb2_grpc

    with RowForge(address=server.address) as client:
        uri = client.file.upload_file(b"some text", name="notes.txt").uri
    with grpc.insecure_channel(server.address) as ch:
        info = file_service_pb2_grpc.FileServiceStub(ch).GetFile(fpb.GetFileRequest(uri=uri)).file
    assert (info.kind, info.file_kind) == ("document", fpb.FILE_KIND_DOCUMENT)
