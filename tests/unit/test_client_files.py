"""File client against a fake FileService: uploads stream 1 MiB chunks after the metadata,
downloads write atomically (a failed one leaves nothing behind), model calls build requests."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

import rowforge.clients.types as t
from rowforge.clients import AsyncRowForge, RowForge
from rowforge.clients import exceptions as ex
from rowforge.v1 import common_pb2, file_service_pb2_grpc, model_service_pb2_grpc
from rowforge.v1 import file_service_pb2 as fpb
from rowforge.v1 import model_service_pb2 as mpb
from tests.support.fake_grpc import FakeServer, rich_status

MiB = 1024 * 1024


class Files(file_service_pb2_grpc.FileServiceServicer):
    def __init__(self) -> None:
        self.metadata: fpb.FileMetadata | None = None
        self.chunk_sizes: list[int] = []
        self.content = b""

    async def UploadFile(self, request_iterator, context):
        self.chunk_sizes = []
        data = bytearray()
        async for i, part in _enumerate(request_iterator):
            kind = part.WhichOneof("part")
            assert (kind == "metadata") == (i == 0)
            if kind == "metadata":
                self.metadata = part.metadata
            else:
                self.chunk_sizes.append(len(part.chunk))
                data += part.chunk
        self.content = bytes(data)
        return fpb.UploadFileResponse(file=fpb.FileInfo(
            uri=f"file://p/abc/{self.metadata.name}", name=self.metadata.name, size=len(data),
            content_type=self.metadata.content_type))

    async def DownloadFile(self, request, context):
        yield fpb.DownloadFileResponse(file=fpb.FileInfo(uri=request.uri, name="report.txt",
                                                     size=len(self.content)))
        for i in range(0, len(self.content), 1000):
            yield fpb.DownloadFileResponse(chunk=self.content[i:i + 1000])
            if request.uri.endswith("broken") and i >= 2000:
                await context.abort_with_status(rich_status(grpc.StatusCode.DATA_LOSS,
                                                            "blob is corrupt"))


class Models(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self) -> None:
        self.last = None

    async def ListModels(self, request, context):
        self.last = request
        return mpb.ListModelsResponse(items=[
            mpb.Model(id="a/chat", capabilities=[common_pb2.CAPABILITY_CHAT], context_length=8),
            mpb.Model(id="b/chat", capabilities=[common_pb2.CAPABILITY_CHAT,
                                                 common_pb2.CAPABILITY_IMAGE])])

    async def CreateChatCompletion(self, request, context):
        self.last = request
        return mpb.CreateChatCompletionResponse(completion=mpb.ChatCompleted(
            message=mpb.ChatMessage(role="assistant", content="{\"a\": 1}"),
            finish_reason=mpb.FINISH_REASON_LENGTH, usage=common_pb2.Usage(total_tokens=9),
            model=request.model, id="c1"))

    async def ChatCompletion(self, request, context):
        self.last = request
        yield mpb.ChatCompletionResponse(started=mpb.ChatStarted(model="m", id="c2"))
        for i, word in enumerate(["Hel", "lo"]):
            yield mpb.ChatCompletionResponse(delta=mpb.ChatDelta(text=word, index=i))
        yield mpb.ChatCompletionResponse(completed=mpb.ChatCompleted(
            message=mpb.ChatMessage(role="assistant", content="Hello"),
            finish_reason=mpb.FINISH_REASON_STOP, usage=common_pb2.Usage(total_tokens=3)))

    async def Embed(self, request, context):
        self.last = request
        return mpb.EmbedResponse(data=[mpb.Embedding(index=i, embedding=[0.5, float(i)])
                                       for i in range(len(request.input))], model="e")


async def _enumerate(aiter):  # type: ignore[no-untyped-def]
    i = 0
    async for item in aiter:
        yield i, item
        i += 1


@pytest.fixture(scope="module")
def files() -> Files:
    return Files()


@pytest.fixture(scope="module")
def models() -> Models:
    return Models()


@pytest.fixture(scope="module")
def fake(files: Files, models: Models) -> Iterator[FakeServer]:
    with FakeServer([files, models]) as server:
        yield server


@pytest.fixture
def client(fake: FakeServer) -> Iterator[RowForge]:
    with RowForge(address=fake.address) as c:
        yield c


def test_upload_streams_chunks_of_one_mib(client: RowForge, files: Files,
                                          tmp_path: Path) -> None:
    path = tmp_path / "doc.txt"
    data = bytes(range(256)) * (10 * 1024)  # 2.5 MiB
    path.write_bytes(data)
    info = client.file.upload_file(path)
    assert info.uri == "file://p/abc/doc.txt"
    assert files.chunk_sizes == [MiB, MiB, len(data) - 2 * MiB]
    assert files.content == data
    assert (files.metadata.name, files.metadata.size, files.metadata.content_type) == (
        "doc.txt", len(data), "text/plain")


def test_upload_bytes_and_file_objects(client: RowForge, files: Files) -> None:
    assert client.file.upload_file(b"abc", name="a.bin").uri.endswith("/a.bin")
    assert files.content == b"abc"
    client.file.upload_file(io.BytesIO(b"x" * 10), name="b.csv")
    assert files.metadata.content_type == "text/csv"
    with pytest.raises(ex.InvalidArgumentError):
        client.file.upload_file(b"abc")  # bytes need a name
    with pytest.raises(FileNotFoundError):
        client.file.upload_file("/no/such/file.png")


def test_download_to_bytes_and_to_a_directory(client: RowForge, files: Files,
                                              tmp_path: Path) -> None:
    files.content = b"0123456789" * 500
    assert client.file.download_file("file://p/abc/report.txt") == files.content
    written = client.file.download_file("file://p/abc/report.txt", tmp_path)
    assert written == tmp_path / "report.txt" and written.read_bytes() == files.content


def test_failed_download_leaves_no_file(client: RowForge, files: Files, tmp_path: Path) -> None:
    files.content = b"z" * 5000
    target = tmp_path / "out.bin"
    with pytest.raises(ex.ServerError) as info:
        client.file.download_file("file://p/abc/broken", target)
    assert info.value.code == grpc.StatusCode.DATA_LOSS
    assert list(tmp_path.iterdir()) == []


def test_chat_request_building(client: RowForge, models: Models) -> None:
    class Answer(t.Usage):
        pass

    out = client.generate_chat_completions(t.ChatRequest(
        model="a/chat", messages=[t.ChatEntry.system("sys"), t.ChatEntry.user(
            "look", attachments=["file://p/x/img.png"])],
        max_tokens=5, temperature=0.0, stream=False, response_format=Answer))
    request = models.last
    assert [m.role for m in request.messages] == ["system", "user"]
    assert request.messages[1].attachments[0].uri == "file://p/x/img.png"
    assert request.HasField("temperature") and request.temperature == 0.0
    assert not request.HasField("top_p")
    assert request.response_format.type == mpb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA
    assert request.response_format.name == "Answer"
    assert (out.text, out.finish_reason, out.usage.total_tokens) == ('{"a": 1}', "length", 9)
    assert out.choices[0].message.content == out.text


def test_chat_stream_and_embeddings(client: RowForge, models: Models) -> None:
    chunks = list(client.generate_chat_completions(t.ChatRequest(
        messages=[t.ChatEntry.user("hi")], stream=True)))
    assert "".join(c.text for c in chunks) == "Hello"
    assert chunks[-1].finish_reason == "stop" and chunks[-1].usage.total_tokens == 3
    assert chunks[0].model == "m" and chunks[0].id == "c2"
    emb = client.generate_embeddings(t.EmbeddingRequest(input="one", type="query"))
    assert list(models.last.input) == ["one"] and models.last.is_query
    assert emb.data[0].embedding == [0.5, 0.0]


async def test_models_async(fake: FakeServer, models: Models) -> None:
    async with AsyncRowForge(address=fake.address) as client:
        assert await client.model_ids(prefer="b/chat", capabilities=["chat"]) == ["b/chat",
                                                                                 "a/chat"]
        assert list(models.last.capabilities) == [common_pb2.CAPABILITY_CHAT]
        info = await client.model_info()
        assert [m.capabilities for m in info.data] == [["chat"], ["chat", "image"]]
        assert (await client.model_info(model="a/chat")).data[0].context_length == 8
        text = "".join([c.text async for c in client.generate_chat_completions(
            t.ChatRequest(messages=[t.ChatEntry.user("hi")]))])
        assert text == "Hello"
