"""EmbedFileContent over a real server: a file uploaded and embedded in one client-streamed
call, with UploadFile's limits and type sniffing; every refusal (bad metadata, too large,
wrong type, no text, bad chunking, failing embedding model, a cancelled call) leaves no file,
no blob and no rows. Then the Python client's ``embed_file`` (sync and async) with a path,
bytes, a file object and a stored file's URI, as the seed calls it."""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

import rowforge.clients.types as t
from rowforge.clients import AsyncRowForge, RowForge
from rowforge.clients import exceptions as ex
from rowforge.v1 import file_service_pb2 as fpb
from rowforge.v1 import knowledge_service_pb2 as kpb
from rowforge.v1 import table_service_pb2 as tpb
from tests.conftest import FAKE_KEY_ENV, fake_models
from tests.integration.test_knowledge_service import ACTION, CORPUS, KNOWLEDGE, Client
from tests.support.server import ServerProcess
from tests.support.status import details

LIMIT = 256 * 1024  # documents (and images) on this module's server
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
    "0000000d49444154789c6300010000000500010d0a2db40000000049454e44ae426082")
GUIDE = ("# Field guide\n\n" + "\n\n".join(
    f"Section {i}. " + CORPUS[i % len(CORPUS)][1] * 3 for i in range(12))).encode()


@pytest.fixture(scope="module")
def cserver(tmp_path_factory: pytest.TempPathFactory, fake_openai: Any) -> Iterator[ServerProcess]:
    env = {"ROWFORGE_MODELS": json.dumps(fake_models(fake_openai)), FAKE_KEY_ENV: "sk-fake",
           "ROWFORGE_MAX_DOCUMENT_BYTES": str(LIMIT), "ROWFORGE_MAX_IMAGE_BYTES": str(LIMIT)}
    proc = ServerProcess(tmp_path_factory.mktemp("content"), env=env)
    with proc.start():
        yield proc


@pytest.fixture
async def client(cserver: ServerProcess) -> AsyncIterator[Client]:
    async with grpc.aio.insecure_channel(cserver.address) as ch:
        yield Client(ch, (("x-project-id", f"ec-{uuid.uuid4().hex[:12]}"),))


def messages(name: str, data: bytes, *, table_id: str = "kb", piece: int = 64 * 1024,
             **meta: Any) -> list[kpb.EmbedFileContentRequest]:
    file = {k: meta.pop(k) for k in ("content_type", "size", "sha256") if k in meta}
    out = [kpb.EmbedFileContentRequest(metadata=kpb.EmbedFileContentMetadata(
        table_id=table_id, file=fpb.FileMetadata(name=name, **file), **meta))]
    out += [kpb.EmbedFileContentRequest(chunk=data[i:i + piece])
            for i in range(0, len(data), piece)]
    return out


async def send(client: Client, requests: list[kpb.EmbedFileContentRequest]
               ) -> kpb.EmbedFileContentResponse:
    async def gen() -> AsyncIterator[kpb.EmbedFileContentRequest]:
        for r in requests:
            yield r

    return await client.knowledge.EmbedFileContent(gen(), metadata=client.md)


def blobs(server: ServerProcess) -> set[str]:
    root = server.data_dir / "files"
    return {p.name for p in (root / "blobs").rglob("*") if p.is_file()} | {
        f"tmp/{p.name}" for p in (root / "tmp").glob("*")}


async def files_of(client: Client) -> int:
    return (await client.files.ListFiles(fpb.ListFilesRequest(), metadata=client.md)).total


async def test_a_file_is_uploaded_embedded_and_kept_in_one_call(
        client: Client, cserver: ServerProcess) -> None:
    await client.create()
    before = blobs(cserver)
    reply = await send(client, messages("guide.md", GUIDE, chunk_size=400, chunk_overlap=50))
    assert reply.file.name == "guide.md" and reply.file.content_type == "text/markdown"
    assert reply.file.size == len(GUIDE) and reply.file.uri.startswith("file://")
    assert reply.chunk_count == reply.row_count == len(reply.row_ids) > 3
    assert reply.page_count == 0
    assert len(blobs(cserver) - before) == 1
    rows = await client.rows(columns=["Title", "Text", "File ID"])
    assert [r["ID"] for r in rows] == list(reply.row_ids)
    assert all(r["File ID"] == reply.file.uri and r["Title"] == "Field guide" for r in rows)
    assert all(len(r["Text"]) <= 400 for r in rows)
    hits = await client.search("magma bursts out as lava", k=1)
    assert "volcano erupts" in hits.items[0].row.cells["Text"].value.string_value
    got = await client.files.GetFile(fpb.GetFileRequest(uri=reply.file.uri), metadata=client.md)
    assert got.file.sha256 == reply.file.sha256
    # The rows hold the file: it is in use.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.files.DeleteFile(fpb.DeleteFileRequest(uri=reply.file.uri),
                                      metadata=client.md)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def _cases() -> list[tuple[str, list[kpb.EmbedFileContentRequest], grpc.StatusCode, str, str]]:
    good = b"Volcanoes erupt lava and ash."
    meta_again = messages("a.txt", good)
    meta_again.insert(2 if len(meta_again) > 1 else 1, meta_again[0])
    first_chunk = messages("a.txt", good)[1:]
    return [
        ("no metadata first", first_chunk, grpc.StatusCode.INVALID_ARGUMENT,
         "METADATA_REQUIRED", "metadata"),
        ("metadata twice", meta_again, grpc.StatusCode.INVALID_ARGUMENT,
         "UNEXPECTED_METADATA", "metadata"),
        ("no table id", messages("a.txt", good, table_id=""), grpc.StatusCode.INVALID_ARGUMENT,
         "", "metadata.table_id"),
        ("unknown table", messages("a.txt", good, table_id="nope"), grpc.StatusCode.NOT_FOUND,
         "TABLE_NOT_FOUND", ""),
        ("action table", messages("a.txt", good, table_id="act"), grpc.StatusCode.NOT_FOUND,
         "TABLE_NOT_FOUND", ""),
        ("empty file", messages("a.txt", b""), grpc.StatusCode.INVALID_ARGUMENT,
         "EMPTY_FILE", ""),
        ("too large", messages("big.txt", b"word " * (LIMIT // 5 + 10)),
         grpc.StatusCode.INVALID_ARGUMENT, "FILE_TOO_LARGE", "metadata.file.size"),
        ("declared too large", messages("a.txt", good, size=LIMIT * 4),
         grpc.StatusCode.INVALID_ARGUMENT, "FILE_TOO_LARGE", "metadata.file.size"),
        ("size mismatch", messages("a.txt", good, size=len(good) + 1),
         grpc.StatusCode.INVALID_ARGUMENT, "SIZE_MISMATCH", "metadata.file.size"),
        ("checksum mismatch", messages("a.txt", good, sha256="0" * 64),
         grpc.StatusCode.INVALID_ARGUMENT, "CHECKSUM_MISMATCH", "metadata.file.sha256"),
        ("type mismatch", messages("a.pdf", good), grpc.StatusCode.INVALID_ARGUMENT,
         "FILE_TYPE_MISMATCH", ""),
        ("bad name", messages("", good), grpc.StatusCode.INVALID_ARGUMENT, "",
         "metadata.file.name"),
        ("an image", messages("pixel.png", PNG), grpc.StatusCode.INVALID_ARGUMENT,
         "UNSUPPORTED_FILE_TYPE", ""),
        ("no text", messages("blank.txt", b"   \n\n  "), grpc.StatusCode.INVALID_ARGUMENT,
         "EMPTY_DOCUMENT", ""),
        ("corrupt", messages("broken.pdf", b"%PDF-1.4\n garbage"),
         grpc.StatusCode.INVALID_ARGUMENT, "CORRUPT_FILE", ""),
        ("chunk size", messages("a.txt", good, chunk_size=50), grpc.StatusCode.INVALID_ARGUMENT,
         "", "metadata.chunk_size"),
        ("overlap", messages("a.txt", good, chunk_size=300, chunk_overlap=300),
         grpc.StatusCode.INVALID_ARGUMENT, "", "metadata.chunk_overlap"),
    ]


@pytest.mark.parametrize(("requests", "code", "reason", "field"),
                         [c[1:] for c in _cases()], ids=[c[0] for c in _cases()])
async def test_refusals_leave_no_file_no_blob_and_no_rows(
        client: Client, cserver: ServerProcess, requests: list[Any], code: grpc.StatusCode,
        reason: str, field: str) -> None:
    await client.create()
    await client.create("act", table_type=ACTION, cols=[])
    before = blobs(cserver)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await send(client, requests)
    assert err.value.code() == code, err.value.details()
    got, _, fields = details(err.value)
    if reason:
        assert got == reason
    if field:
        assert field in fields, fields
    assert await files_of(client) == 0
    assert await client.rows() == []
    assert blobs(cserver) == before


async def test_a_failing_embedding_model_leaves_nothing(
        client: Client, cserver: ServerProcess, fake_openai: Any) -> None:
    await client.tables.CreateTable(tpb.CreateTableRequest(
        table_type=KNOWLEDGE, table_id="kb", embedding_model="fake/embed"), metadata=client.md)
    before = blobs(cserver)
    fake_openai.reset()
    fake_openai.add_rule("Volcanoes", 503)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await send(client, messages("v.txt", b"Volcanoes erupt lava and ash."))
    finally:
        fake_openai.reset()
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert await files_of(client) == 0 and await client.rows() == []
    assert blobs(cserver) == before
    # The same file is fine once the model is back.
    reply = await send(client, messages("v.txt", b"Volcanoes erupt lava and ash."))
    assert reply.row_count == 1 and await files_of(client) == 1


async def test_a_table_deleted_while_embedding_leaves_no_file(
        client: Client, cserver: ServerProcess, fake_openai: Any) -> None:
    await client.tables.CreateTable(tpb.CreateTableRequest(
        table_type=KNOWLEDGE, table_id="kb", embedding_model="fake/embed"), metadata=client.md)
    before = blobs(cserver)
    fake_openai.reset()
    fake_openai.latency = 1.5
    try:
        call = asyncio.ensure_future(send(client, messages("v.txt", b"Volcanoes erupt lava.")))
        for _ in range(200):  # until the embedding model was called
            if fake_openai.requests_to("/v1/embeddings"):
                break
            await asyncio.sleep(0.02)
        await client.tables.DeleteTable(tpb.DeleteTableRequest(
            table_type=KNOWLEDGE, table_id="kb"), metadata=client.md)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
    finally:
        fake_openai.latency = 0.0
    # The file was committed for the insert, which found the table gone: the file went too.
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert await files_of(client) == 0
    assert blobs(cserver) == before


async def test_a_call_cancelled_mid_upload_leaves_nothing(
        client: Client, cserver: ServerProcess) -> None:
    await client.create()
    before = blobs(cserver)
    sent = asyncio.Event()

    async def slow() -> AsyncIterator[kpb.EmbedFileContentRequest]:
        for r in messages("guide.md", GUIDE, piece=32):  # ~130 messages: ~1.3 s
            yield r
            sent.set()
            await asyncio.sleep(0.01)

    call = client.knowledge.EmbedFileContent(slow(), metadata=client.md)
    await sent.wait()
    await asyncio.sleep(0.1)
    assert not call.done()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    for _ in range(100):  # the server notices the cancellation shortly after
        if blobs(cserver) == before:
            break
        await asyncio.sleep(0.05)
    assert blobs(cserver) == before
    assert await files_of(client) == 0 and await client.rows() == []


# -- the Python client -----------------------------------------------------------------------

def test_client_embed_file_takes_a_path_bytes_a_file_object_or_a_uri(
        cserver: ServerProcess, tmp_path: Path) -> None:
    project = f"ecc-{uuid.uuid4().hex[:8]}"
    with RowForge(address=cserver.address, project_id=project) as jamai:
        jamai.table.create_knowledge_table(t.KnowledgeTableSchemaCreate(id="my_kb", cols=[]))
        doc = tmp_path / "doc.txt"
        doc.write_bytes(b"The rowforge server listens on port 50051 by default.")
        by_path = jamai.table.embed_file(file_path=str(doc), table_id="my_kb")  # the seed's
        assert by_path.row_count == 1 and by_path.uri.endswith("/doc.txt")
        seen: list[tuple[int, int]] = []
        by_bytes = jamai.table.embed_file(GUIDE, "my_kb", name="guide.md", chunk_size=400,
                                          chunk_overlap=50, progress=lambda d, n: seen.append(
                                              (d, n)))
        assert by_bytes.row_count > 3 and seen == [(by_bytes.chunk_count,) * 2]
        by_object = jamai.table.embed_file(io.BytesIO(b"Bees make honey from nectar."),
                                           "my_kb", name="bees.txt")
        assert by_object.row_count == 1
        with open(doc, "rb") as fh:
            assert jamai.table.embed_file(fh, "my_kb").uri.endswith("/doc.txt")
        stored = jamai.file.upload_file(b"Tides follow the moon.", name="tides.txt")
        by_uri = jamai.table.embed_file(stored.uri, "my_kb")
        assert by_uri.uri == stored.uri and by_uri.row_count == 1
        total = jamai.table.list_table_rows("knowledge", "my_kb").total
        assert total == 1 + by_bytes.row_count + 1 + 1 + 1
        hits = jamai.table.hybrid_search("my_kb", "which port does the server listen on", k=1)
        assert "50051" in hits[0]["Text"]["value"]

        # Refusals reach the caller typed, and leave nothing.
        files_before = jamai.file.list_files().total
        with pytest.raises(ex.InvalidArgumentError) as err:
            jamai.table.embed_file(b"   \n ", "my_kb", name="blank.txt")
        assert err.value.reason == "EMPTY_DOCUMENT"
        with pytest.raises(ex.InvalidArgumentError) as err:
            jamai.table.embed_file(b"x" * (LIMIT + 1), "my_kb", name="big.txt")
        assert err.value.reason == "FILE_TOO_LARGE"
        with pytest.raises(ex.NotFoundError):
            jamai.table.embed_file(doc, "no_such_kb")
        with pytest.raises(ex.InvalidArgumentError):
            jamai.table.embed_file(b"no name", "my_kb")
        with pytest.raises(FileNotFoundError):
            jamai.table.embed_file(tmp_path / "missing.txt", "my_kb")
        assert jamai.file.list_files().total == files_before
        assert jamai.table.list_table_rows("knowledge", "my_kb").total == total


async def test_async_client_embed_file(cserver: ServerProcess, tmp_path: Path) -> None:
    doc = tmp_path / "notes.md"
    doc.write_bytes(GUIDE)
    async with AsyncRowForge(address=cserver.address,
                             project_id=f"eca-{uuid.uuid4().hex[:8]}") as jamai:
        await jamai.table.create_knowledge_table(t.KnowledgeTableSchemaCreate(id="kb", cols=[]))
        done = await jamai.table.embed_file(doc, "kb", chunk_size=400, chunk_overlap=50)
        assert done.row_count > 3 and done.uri.endswith("/notes.md")
        with pytest.raises(ex.InvalidArgumentError) as err:
            await jamai.table.embed_file(PNG, "kb", name="pixel.png")
        assert err.value.reason == "UNSUPPORTED_FILE_TYPE"
        with pytest.raises(ex.InvalidArgumentError) as err:
            await jamai.table.embed_file(b"x" * (LIMIT + 1), "kb", name="big.txt")
        assert err.value.reason == "FILE_TOO_LARGE"
        assert (await jamai.file.list_files()).total == 1
