"""FileService over real servers: every RPC, every bad input, and nothing half-written."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import re
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path

import grpc
import pytest
from PIL import Image

from rowforge.v1 import file_service_pb2 as pb
from rowforge.v1 import file_service_pb2_grpc
from tests.support.server import ServerProcess
from tests.support.status import fails_on_fields as fails
from tests.support.status import violated_fields as error_details
from tests.support.waiting import eventually

MiB = 1024 * 1024
IMAGE_LIMIT = 100_000
Metadata = tuple[tuple[str, str], ...]


# --- helpers -------------------------------------------------------------------------------------

def project() -> Metadata:
    """A fresh project of its own (auth is off: x-project-id picks it)."""
    return (("x-project-id", f"t-{uuid.uuid4().hex[:12]}"),)


def text(size: int) -> bytes:
    return os.urandom(size // 2 + 1).hex().encode()[:size]


def png(width: int = 300, height: int = 150) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (10, 120, 200)).save(out, "PNG")
    return out.getvalue()


def requests(name: str, data: bytes, *, chunk: int = MiB, content_type: str = "",
             size: int = 0, sha256: str = "") -> Iterator[pb.UploadFileRequest]:
    """An upload as a plain iterator (both the asyncio and the blocking stubs take it)."""
    yield pb.UploadFileRequest(metadata=pb.FileMetadata(
        name=name, content_type=content_type, size=size, sha256=sha256))
    for start in range(0, len(data), chunk):
        yield pb.UploadFileRequest(chunk=data[start:start + chunk])


async def upload(stub: file_service_pb2_grpc.FileServiceStub, name: str, data: bytes,
                 md: Metadata = (), **meta) -> pb.FileInfo:  # type: ignore[no-untyped-def]
    reply = await stub.UploadFile(requests(name, data, **meta), metadata=md, timeout=30)
    return reply.file


async def download(stub: file_service_pb2_grpc.FileServiceStub, uri: str, md: Metadata = (),
                   offset: int = 0, length: int = 0) -> tuple[pb.FileInfo, list[bytes]]:
    messages = [m async for m in stub.DownloadFile(
        pb.DownloadFileRequest(uri=uri, offset=offset, length=length), metadata=md, timeout=30)]
    assert messages and messages[0].WhichOneof("part") == "file"
    assert all(m.WhichOneof("part") == "chunk" for m in messages[1:])
    return messages[0].file, [m.chunk for m in messages[1:]]


def _blocking_upload_error(address: str, upload_requests: Iterable[pb.UploadFileRequest],
                           md: Metadata) -> grpc.RpcError:
    with grpc.insecure_channel(address) as ch:
        stub = file_service_pb2_grpc.FileServiceStub(ch)
        try:
            stub.UploadFile(iter(upload_requests), metadata=md, timeout=30)
        except grpc.RpcError as err:
            return err
    raise AssertionError("the upload succeeded")


async def upload_fails(address: str, upload_requests: Iterable[pb.UploadFileRequest],
                       code: grpc.StatusCode, md: Metadata = ()
                       ) -> tuple[str, dict[str, str], list[str]]:
    """Run an upload the server refuses, through the blocking stub.

    The asyncio client misreports a status that arrives while it is still sending as
    INTERNAL "Internal error from Core" (grpc/grpc#36066); the blocking client reports the
    server's status, which is what these tests check.
    """
    err = await asyncio.to_thread(_blocking_upload_error, address, upload_requests, md)
    assert err.code() == code, err.details()  # type: ignore[attr-defined]
    return error_details(err)


def temp_files(proc: ServerProcess) -> list[Path]:
    return list((proc.data_dir / "files" / "tmp").iterdir())


def blob_path(proc: ServerProcess, sha: str) -> Path:
    return proc.data_dir / "files" / "blobs" / sha[:2] / sha


@pytest.fixture
async def stub(channel: grpc.aio.Channel) -> file_service_pb2_grpc.FileServiceStub:
    return file_service_pb2_grpc.FileServiceStub(channel)


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with a tiny image limit, a 1-second upload idle timeout and 4 MiB messages."""
    proc = ServerProcess(tmp_path_factory.mktemp("limited"), env={
        "ROWFORGE_MAX_IMAGE_BYTES": str(IMAGE_LIMIT), "ROWFORGE_UPLOAD_IDLE_TIMEOUT_S": "1",
        "ROWFORGE_MAX_MESSAGE_BYTES": str(4 * MiB)})
    with proc.start():
        yield proc


def admin(data_dir: Path, *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "rowforge.server", "admin", "--data-dir",
                          str(data_dir), *args], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[tuple[ServerProcess, dict[str, Metadata]]]:
    """A server with auth on and two projects; metadata per project."""
    data = tmp_path_factory.mktemp("secured")
    credentials: dict[str, Metadata] = {}
    for name in ("alpha", "beta"):
        admin(data, "create-project", name.title(), "--id", name)
        token = admin(data, "create-token", "--project", name)
        credentials[name] = (("authorization", f"Bearer {token}"), ("x-project-id", name))
    with ServerProcess(data, env={"ROWFORGE_AUTH": "true"}).start() as proc:
        yield proc, credentials


# --- every RPC -----------------------------------------------------------------------------------

async def test_every_rpc_round_trip(stub, server: ServerProcess) -> None:  # type: ignore[no-untyped-def]
    md = project()
    data = text(3 * MiB + 12_345)
    sha = hashlib.sha256(data).hexdigest()
    file = await upload(stub, "notes.txt", data, md, size=len(data), sha256=sha,
                        content_type="text/plain")
    assert (file.name, file.size, file.sha256, file.kind) == ("notes.txt", len(data), sha,
                                                              "document")
    assert file.content_type == "text/plain"
    assert re.fullmatch(r"file://t-[0-9a-f]{12}/[0-9a-f]{32}/notes\.txt", file.uri)
    assert file.create_time.seconds > 0
    assert blob_path(server, sha).read_bytes() == data

    assert (await stub.GetFile(pb.GetFileRequest(uri=file.uri), metadata=md)).file == file
    listed = await stub.ListFiles(pb.ListFilesRequest(), metadata=md)
    assert (list(listed.items), listed.total, listed.next_page_token) == ([file], 1, "")

    head, chunks = await download(stub, file.uri, md)
    assert head == file
    assert b"".join(chunks) == data
    assert [len(c) for c in chunks] == [MiB, MiB, MiB, 12_345]

    image = await upload(stub, "photo.png", png(), md)
    thumb = await stub.GetThumbnail(pb.GetThumbnailRequest(uri=image.uri, size=64), metadata=md)
    assert thumb.content_type == "image/png"
    assert Image.open(io.BytesIO(thumb.content)).size == (64, 32)

    await stub.DeleteFile(pb.DeleteFileRequest(uri=file.uri), metadata=md)
    await fails(lambda: stub.GetFile(pb.GetFileRequest(uri=file.uri), metadata=md),
                grpc.StatusCode.NOT_FOUND)
    assert not blob_path(server, sha).exists()
    await stub.DeleteFile(pb.DeleteFileRequest(uri=image.uri, force=True), metadata=md)
    assert (await stub.ListFiles(pb.ListFilesRequest(), metadata=md)).total == 0
    assert temp_files(server) == []


# --- names and URIs ------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "stored"), [
    ("../../etc/passwd", "passwd"),
    ("..\\x", "x"),
    ("..\\..\\boot.ini", "boot.ini"),
    ("/etc/cron.d/job.txt", "job.txt"),
    ("nul\x00byte.txt", "nulbyte.txt"),
    ("line\nbreak.md", "linebreak.md"),
])
async def test_names_never_become_paths(stub, server: ServerProcess, name: str,  # type: ignore[no-untyped-def]
                                        stored: str) -> None:
    md = project()
    file = await upload(stub, name, text(100), md)
    assert file.name == stored
    assert file.uri.endswith("/" + stored.replace(" ", "%20"))
    # The only files the server writes are named by content hash (and its own lock files).
    for path in (server.data_dir / "files").rglob("*"):
        if path.is_file():
            assert re.fullmatch(r"[0-9a-f]{64}(-\d+\.png)?|[0-9a-f]{2}\.lock", path.name), path
    assert not list(server.data_dir.rglob(stored))
    assert (await stub.GetFile(pb.GetFileRequest(uri=file.uri), metadata=md)).file == file


@pytest.mark.parametrize("name", ["", "..", "../", "a/..", "\x00"])
async def test_names_with_nothing_left_are_refused(server: ServerProcess, name: str) -> None:
    reason, _, fields = await upload_fails(server.address, requests(name, text(10)),
                                           grpc.StatusCode.INVALID_ARGUMENT)
    assert (reason, fields) == ("INVALID_FILE_NAME", ["metadata.name"])


@pytest.mark.parametrize(("uri", "code"), [
    ("", grpc.StatusCode.INVALID_ARGUMENT),
    ("file://default/../../etc/passwd", grpc.StatusCode.INVALID_ARGUMENT),
    ("/etc/passwd", grpc.StatusCode.INVALID_ARGUMENT),
    ("s3://bucket/key.png", grpc.StatusCode.INVALID_ARGUMENT),
    ("file://default/" + "0" * 32 + "/a.txt", grpc.StatusCode.NOT_FOUND),
    ("file://someone-else/" + "0" * 32 + "/a.txt", grpc.StatusCode.NOT_FOUND),
])
async def test_bad_and_unknown_uris(stub, uri: str, code: grpc.StatusCode) -> None:  # type: ignore[no-untyped-def]
    calls = [
        lambda: stub.GetFile(pb.GetFileRequest(uri=uri)),
        lambda: stub.DeleteFile(pb.DeleteFileRequest(uri=uri, force=True)),
        lambda: stub.DownloadFile(pb.DownloadFileRequest(uri=uri)),
        lambda: stub.GetThumbnail(pb.GetThumbnailRequest(uri=uri)),
    ]
    for call in calls:
        reason, _, fields = await fails(call, code)
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            assert (reason, fields) == ("INVALID_FILE_URI", ["uri"])
        else:
            assert reason == "FILE_NOT_FOUND"


# --- bad uploads ---------------------------------------------------------------------------------

def meta_only(name: str) -> Iterator[pb.UploadFileRequest]:
    yield pb.UploadFileRequest(metadata=pb.FileMetadata(name=name))


def with_empty_chunks(name: str) -> Iterator[pb.UploadFileRequest]:
    yield pb.UploadFileRequest(metadata=pb.FileMetadata(name=name))
    yield pb.UploadFileRequest(chunk=b"")
    yield pb.UploadFileRequest(chunk=b"")


def chunk_first() -> Iterator[pb.UploadFileRequest]:
    yield pb.UploadFileRequest(chunk=b"hello")


def nothing() -> Iterator[pb.UploadFileRequest]:
    return
    yield  # pragma: no cover


def metadata_twice() -> Iterator[pb.UploadFileRequest]:
    yield pb.UploadFileRequest(metadata=pb.FileMetadata(name="a.txt"))
    yield pb.UploadFileRequest(chunk=text(100_000))
    yield pb.UploadFileRequest(metadata=pb.FileMetadata(name="b.txt"))


def empty_message() -> Iterator[pb.UploadFileRequest]:
    yield pb.UploadFileRequest(metadata=pb.FileMetadata(name="a.txt"))
    yield pb.UploadFileRequest()


def one_chunk(data: bytes) -> Iterator[pb.UploadFileRequest]:
    yield pb.UploadFileRequest(metadata=pb.FileMetadata(name="a.txt"))
    yield pb.UploadFileRequest(chunk=data)


DATA = text(5000)


@pytest.mark.parametrize(("make", "reason", "fields"), [
    (lambda: meta_only("empty.txt"), "EMPTY_FILE", []),
    (lambda: with_empty_chunks("empty.png"), "EMPTY_FILE", []),
    (lambda: requests("fake.png", DATA), "FILE_TYPE_MISMATCH", []),
    (lambda: requests("fake.txt", png()), "FILE_TYPE_MISMATCH", []),
    (lambda: requests("a.txt", DATA, content_type="image/png"), "FILE_TYPE_MISMATCH", []),
    (lambda: requests("tool", b"\x7fELF" + bytes(500)), "UNSUPPORTED_FILE_TYPE", []),
    (chunk_first, "METADATA_REQUIRED", ["metadata"]),
    (nothing, "METADATA_REQUIRED", ["metadata"]),
    (metadata_twice, "UNEXPECTED_METADATA", ["metadata"]),
    (empty_message, "INVALID_ARGUMENT", ["part"]),
    (lambda: requests("a.txt", DATA, size=4999), "SIZE_MISMATCH", ["metadata.size"]),
    (lambda: requests("a.txt", DATA, size=5001), "SIZE_MISMATCH", ["metadata.size"]),
    (lambda: requests("a.txt", DATA, size=-1), "INVALID_ARGUMENT", ["metadata.size"]),
    (lambda: requests("a.txt", DATA, sha256="ab" * 32), "CHECKSUM_MISMATCH", ["metadata.sha256"]),
    (lambda: requests("a.txt", DATA, sha256="not-hex"), "INVALID_ARGUMENT", ["metadata.sha256"]),
    (lambda: requests("a.txt", DATA, size=201 * MiB), "FILE_TOO_LARGE", ["metadata.size"]),
])
async def test_bad_uploads_are_refused_and_leave_nothing(stub, server: ServerProcess, make,  # type: ignore[no-untyped-def]
                                                         reason, fields) -> None:
    md = project()
    got_reason, _, got_fields = await upload_fails(server.address, make(),
                                                   grpc.StatusCode.INVALID_ARGUMENT, md)
    assert (got_reason, got_fields) == (reason, fields)
    assert (await stub.ListFiles(pb.ListFilesRequest(), metadata=md)).total == 0
    await eventually(lambda: temp_files(server) == [])


async def test_chunks_up_to_the_message_limit(limited: ServerProcess) -> None:
    """Any chunk a message can carry is taken (1 MiB is only the recommended size); a
    larger message is gRPC's RESOURCE_EXHAUSTED, and nothing stays behind."""
    md, data = project(), text(3 * MiB)
    async with grpc.aio.insecure_channel(limited.address) as channel:
        stub = file_service_pb2_grpc.FileServiceStub(channel)
        info = await stub.UploadFile(one_chunk(data), metadata=md, timeout=30)
        assert info.file.size == len(data)
        _, chunks = await download(stub, info.file.uri, md)
        assert b"".join(chunks) == data
    err = await asyncio.to_thread(_blocking_upload_error, limited.address,
                                  one_chunk(text(5 * MiB)), md)
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err.details()  # type: ignore[attr-defined]
    await eventually(lambda: temp_files(limited) == [])


async def test_oversize_is_refused_as_soon_as_it_passes_the_limit(limited: ServerProcess
                                                                  ) -> None:
    sent = 0

    def endless_image() -> Iterator[pb.UploadFileRequest]:
        nonlocal sent
        yield pb.UploadFileRequest(metadata=pb.FileMetadata(name="photo.png"))
        head = png()
        sent += len(head)
        yield pb.UploadFileRequest(chunk=head)
        while True:
            sent += 64 * 1024
            yield pb.UploadFileRequest(chunk=bytes(64 * 1024))

    async with grpc.aio.insecure_channel(limited.address) as ch:
        stub = file_service_pb2_grpc.FileServiceStub(ch)
        reason, metadata, fields = await upload_fails(limited.address, endless_image(),
                                                      grpc.StatusCode.INVALID_ARGUMENT)
        assert (reason, fields) == ("FILE_TOO_LARGE", ["metadata.size"])
        assert metadata == {"limitBytes": str(IMAGE_LIMIT), "kind": "image"}
        # The server stopped reading: what the client pushed is bounded by flow control.
        assert sent < 16 * MiB
        # A declared size over the limit is refused right after the first bytes.
        reason, _, _ = await upload_fails(
            limited.address, requests("p.png", png() + bytes(MiB), size=IMAGE_LIMIT + 1),
            grpc.StatusCode.INVALID_ARGUMENT)
        assert reason == "FILE_TOO_LARGE"
        # Just under the limit is fine; documents have their own (default) limit.
        under = png() + bytes(IMAGE_LIMIT - len(png()))
        assert (await upload(stub, "ok.png", under)).size == IMAGE_LIMIT
        assert (await upload(stub, "big.txt", text(3 * IMAGE_LIMIT))).kind == "document"
    await eventually(lambda: temp_files(limited) == [])


# --- stalled, cancelled and concurrent uploads ---------------------------------------------------

async def stalling(written: asyncio.Event) -> AsyncIterator[pb.UploadFileRequest]:
    yield pb.UploadFileRequest(metadata=pb.FileMetadata(name="slow.txt"))
    yield pb.UploadFileRequest(chunk=text(200_000))
    written.set()
    await asyncio.sleep(60)
    yield pb.UploadFileRequest(chunk=b"never")  # pragma: no cover


async def test_stalled_client_with_a_deadline_leaves_nothing(stub, server: ServerProcess  # type: ignore[no-untyped-def]
                                                             ) -> None:
    md = project()
    written = asyncio.Event()
    call = stub.UploadFile(stalling(written), metadata=md, timeout=2)
    await written.wait()
    await eventually(lambda: len(temp_files(server)) == 1)  # the upload is in progress
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await eventually(lambda: temp_files(server) == [])
    assert (await stub.ListFiles(pb.ListFilesRequest(), metadata=md)).total == 0


async def test_server_abandons_an_idle_upload(limited: ServerProcess) -> None:
    md = project()
    written = asyncio.Event()
    async with grpc.aio.insecure_channel(limited.address) as ch:
        stub = file_service_pb2_grpc.FileServiceStub(ch)
        reason, metadata, _ = await fails(
            lambda: stub.UploadFile(stalling(written), metadata=md, timeout=30),
            grpc.StatusCode.DEADLINE_EXCEEDED)
        assert reason == "UPLOAD_STALLED"
        assert metadata == {"idleTimeoutSeconds": "1"}
        assert written.is_set()
        assert (await stub.ListFiles(pb.ListFilesRequest(), metadata=md)).total == 0
    await eventually(lambda: temp_files(limited) == [])


async def test_cancelled_upload_leaves_nothing(stub, server: ServerProcess) -> None:  # type: ignore[no-untyped-def]
    md = project()
    written = asyncio.Event()
    call = stub.UploadFile(stalling(written), metadata=md, timeout=30)
    await written.wait()
    await eventually(lambda: len(temp_files(server)) == 1)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await eventually(lambda: temp_files(server) == [])
    assert (await stub.ListFiles(pb.ListFilesRequest(), metadata=md)).total == 0


async def test_concurrent_identical_uploads(stub, server: ServerProcess) -> None:  # type: ignore[no-untyped-def]
    md = project()
    data = text(2 * MiB + 777)
    sha = hashlib.sha256(data).hexdigest()
    files = await asyncio.gather(*(upload(stub, f"copy{i}.txt", data, md, chunk=256 * 1024)
                                   for i in range(4)))
    assert len({f.id for f in files}) == 4
    assert {f.sha256 for f in files} == {sha}
    assert [p.name for p in blob_path(server, sha).parent.iterdir()].count(sha) == 1
    assert blob_path(server, sha).read_bytes() == data
    assert temp_files(server) == []
    # Deleting all but one keeps the content; deleting the last removes it.
    for f in files[:3]:
        await stub.DeleteFile(pb.DeleteFileRequest(uri=f.uri), metadata=md)
    _, chunks = await download(stub, files[3].uri, md)
    assert b"".join(chunks) == data
    await stub.DeleteFile(pb.DeleteFileRequest(uri=files[3].uri), metadata=md)
    assert not blob_path(server, sha).exists()


# --- downloads -----------------------------------------------------------------------------------

RANGE_DATA = text(2 * MiB + 100)


@pytest.mark.parametrize(("offset", "length"), [
    (0, 0), (1, 0), (MiB - 1, 2), (MiB, MiB), (10, 3 * MiB), (2 * MiB + 99, 0),
    (2 * MiB + 99, 5), (500, 1),
])
async def test_download_ranges(stub, offset: int, length: int) -> None:  # type: ignore[no-untyped-def]
    md = project()
    file = await upload(stub, "r.txt", RANGE_DATA, md)
    head, chunks = await download(stub, file.uri, md, offset, length)
    assert head == file
    end = offset + length if length else len(RANGE_DATA)
    assert b"".join(chunks) == RANGE_DATA[offset:end]
    assert all(0 < len(c) <= MiB for c in chunks)


@pytest.mark.parametrize(("offset", "length", "reason", "fields"), [
    (2 * MiB + 100, 0, "RANGE_NOT_SATISFIABLE", ["offset"]),
    (10 * MiB, 1, "RANGE_NOT_SATISFIABLE", ["offset"]),
    (-1, 0, "INVALID_ARGUMENT", ["offset"]),
    (0, -5, "INVALID_ARGUMENT", ["length"]),
])
async def test_bad_ranges(stub, offset: int, length: int, reason: str,  # type: ignore[no-untyped-def]
                          fields: list[str]) -> None:
    md = project()
    file = await upload(stub, "r.txt", RANGE_DATA, md)
    got = await fails(lambda: stub.DownloadFile(pb.DownloadFileRequest(
        uri=file.uri, offset=offset, length=length), metadata=md),
        grpc.StatusCode.INVALID_ARGUMENT)
    assert (got[0], got[2]) == (reason, fields)


# --- thumbnails ----------------------------------------------------------------------------------

async def test_thumbnails(stub, server: ServerProcess) -> None:  # type: ignore[no-untyped-def]
    md = project()
    image = await upload(stub, "wide.png", png(800, 400), md)
    for size, expected in [(0, (256, 128)), (100, (100, 50)), (1024, (800, 400)), (1, (1, 1))]:
        reply = await stub.GetThumbnail(pb.GetThumbnailRequest(uri=image.uri, size=size),
                                        metadata=md)
        thumb = Image.open(io.BytesIO(reply.content))
        assert (thumb.format, thumb.size) == ("PNG", expected)
    cached = server.data_dir / "files" / "thumbs" / image.sha256[:2] / f"{image.sha256}-100.png"
    assert cached.is_file()

    document = await upload(stub, "a.txt", text(100), md)
    for uri, size, reason, fields in [(document.uri, 0, "NOT_AN_IMAGE", ["uri"]),
                                      (image.uri, 1025, "INVALID_ARGUMENT", ["size"]),
                                      (image.uri, -3, "INVALID_ARGUMENT", ["size"])]:
        got = await fails(lambda u=uri, s=size: stub.GetThumbnail(
            pb.GetThumbnailRequest(uri=u, size=s), metadata=md), grpc.StatusCode.INVALID_ARGUMENT)
        assert (got[0], got[2]) == (reason, fields)

    await stub.DeleteFile(pb.DeleteFileRequest(uri=image.uri), metadata=md)
    assert not cached.exists()


# --- listing -------------------------------------------------------------------------------------

async def test_list_files_pages(stub) -> None:  # type: ignore[no-untyped-def]
    md = project()
    uploaded = [await upload(stub, f"f{i}.txt", text(50 + i), md) for i in range(5)]
    newest_first = [f.uri for f in reversed(uploaded)]

    seen, token = [], ""
    for _ in range(10):
        page = await stub.ListFiles(pb.ListFilesRequest(limit=2, page_token=token), metadata=md)
        assert page.total == 5 and len(page.items) <= 2
        seen += [f.uri for f in page.items]
        token = page.next_page_token
        if not token:
            break
    assert seen == newest_first

    page = await stub.ListFiles(pb.ListFilesRequest(offset=1, limit=3), metadata=md)
    assert [f.uri for f in page.items] == newest_first[1:4]
    page = await stub.ListFiles(pb.ListFilesRequest(limit=100), metadata=md)
    assert [f.uri for f in page.items] == newest_first and page.next_page_token == ""
    assert (await stub.ListFiles(pb.ListFilesRequest(), metadata=project())).total == 0

    for request, field in [(pb.ListFilesRequest(limit=101), "limit"),
                           (pb.ListFilesRequest(limit=-1), "limit"),
                           (pb.ListFilesRequest(offset=-1), "offset"),
                           (pb.ListFilesRequest(page_token="bm9wZQ"), "page_token")]:
        got = await fails(lambda r=request: stub.ListFiles(r, metadata=md),
                          grpc.StatusCode.INVALID_ARGUMENT)
        assert got[2] == [field]
    token = (await stub.ListFiles(pb.ListFilesRequest(limit=1), metadata=md)).next_page_token
    got = await fails(lambda: stub.ListFiles(pb.ListFilesRequest(page_token=token),
                                             metadata=project()),
                      grpc.StatusCode.INVALID_ARGUMENT)
    assert got[0] == "INVALID_PAGE_TOKEN"


# --- projects ------------------------------------------------------------------------------------

async def test_files_are_visible_only_to_their_project(secured) -> None:  # type: ignore[no-untyped-def]
    proc, creds = secured
    alpha, beta = creds["alpha"], creds["beta"]
    data = png()
    async with grpc.aio.insecure_channel(proc.address) as ch:
        stub = file_service_pb2_grpc.FileServiceStub(ch)
        mine = await upload(stub, "a.png", data, alpha)
        assert mine.uri.startswith("file://alpha/")
        not_found = [
            lambda: stub.GetFile(pb.GetFileRequest(uri=mine.uri), metadata=beta),
            lambda: stub.DownloadFile(pb.DownloadFileRequest(uri=mine.uri), metadata=beta),
            lambda: stub.GetThumbnail(pb.GetThumbnailRequest(uri=mine.uri), metadata=beta),
            lambda: stub.DeleteFile(pb.DeleteFileRequest(uri=mine.uri, force=True),
                                    metadata=beta),
            # Rewriting the project part of the URI does not help either.
            lambda: stub.GetFile(pb.GetFileRequest(
                uri=mine.uri.replace("file://alpha/", "file://beta/")), metadata=beta),
        ]
        for call in not_found:
            reason, _, _ = await fails(call, grpc.StatusCode.NOT_FOUND)
            assert reason == "FILE_NOT_FOUND"
        assert (await stub.ListFiles(pb.ListFilesRequest(), metadata=beta)).total == 0

        # The same content in another project is its own file over one shared blob.
        theirs = await upload(stub, "b.png", data, beta)
        assert theirs.sha256 == mine.sha256 and theirs.id != mine.id
        await stub.DeleteFile(pb.DeleteFileRequest(uri=mine.uri), metadata=alpha)
        _, chunks = await download(stub, theirs.uri, beta)
        assert b"".join(chunks) == data
        assert (await stub.GetFile(pb.GetFileRequest(uri=theirs.uri), metadata=beta)).file == theirs

        await upload_fails(proc.address, requests("x.png", data), grpc.StatusCode.UNAUTHENTICATED)
    assert temp_files(proc) == []
