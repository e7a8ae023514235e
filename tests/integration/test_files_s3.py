"""FileService on the S3 blob store, against moto's standalone S3 server on loopback and real
rowforge servers: uploads (one request and multipart), ranged and whole downloads, dedupe,
FILE_IN_USE, deletes, and failed, cancelled or killed uploads leaving nothing visible."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from PIL import Image

from rowforge.v1 import batch_job_service_pb2 as batch_pb
from rowforge.v1 import batch_job_service_pb2_grpc, file_service_pb2_grpc
from rowforge.v1 import file_service_pb2 as pb
from tests.support.s3 import S3Endpoint, moto_server
from tests.support.server import ServerProcess
from tests.support.status import fails_on_fields as fails
from tests.support.waiting import eventually

MiB = 1024 * 1024
PART_MB = 5
Metadata = tuple[tuple[str, str], ...]


def project() -> Metadata:
    return (("x-project-id", f"t-{uuid.uuid4().hex[:12]}"),)


def text(size: int) -> bytes:
    return os.urandom(size // 2 + 1).hex().encode()[:size]


def requests(name: str, data: bytes, *, chunk: int = MiB, sha256: str = ""
             ) -> Iterator[pb.UploadFileRequest]:
    yield pb.UploadFileRequest(metadata=pb.FileMetadata(name=name, sha256=sha256))
    for start in range(0, len(data), chunk):
        yield pb.UploadFileRequest(chunk=data[start:start + chunk])


async def upload(stub: file_service_pb2_grpc.FileServiceStub, name: str, data: bytes,
                 md: Metadata) -> pb.FileInfo:
    return (await stub.UploadFile(requests(name, data), metadata=md, timeout=60)).file


async def download(stub: file_service_pb2_grpc.FileServiceStub, uri: str, md: Metadata,
                   offset: int = 0, length: int = 0) -> bytes:
    messages = [m async for m in stub.DownloadFile(
        pb.DownloadFileRequest(uri=uri, offset=offset, length=length), metadata=md,
        timeout=60)]
    assert messages[0].WhichOneof("part") == "file"
    return b"".join(m.chunk for m in messages[1:])


def blob_key(sha: str, prefix: str = "rf/") -> str:
    return f"{prefix}blobs/{sha[:2]}/{sha}"


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Endpoint]:
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def bucket(s3: S3Endpoint) -> str:
    return s3.bucket()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, s3: S3Endpoint, bucket: str
           ) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("s3"), env=s3.server_env(
        bucket, ROWFORGE_FILES_PART_MB=str(PART_MB)))
    with proc.start():
        yield proc


@pytest.fixture
async def stub(server: ServerProcess) -> AsyncIterator[file_service_pb2_grpc.FileServiceStub]:
    async with grpc.aio.insecure_channel(server.address) as channel:
        yield file_service_pb2_grpc.FileServiceStub(channel)


def leftovers(s3: S3Endpoint, bucket: str) -> list[str]:
    return s3.keys(bucket, "rf/tmp/") + s3.multipart_uploads(bucket)


@pytest.mark.parametrize("size", [1000, 3 * MiB, 2 * PART_MB * MiB + 12345])
async def test_round_trip_whole_and_ranged(stub, s3: S3Endpoint, bucket: str,  # type: ignore[no-untyped-def]
                                           server: ServerProcess, size: int) -> None:
    md = project()
    data = text(size)
    sha = hashlib.sha256(data).hexdigest()
    info = await upload(stub, "doc.txt", data, md)
    assert info.sha256 == sha and info.size == size
    assert blob_key(sha) in s3.keys(bucket, "rf/blobs/")
    assert s3.client().get_object(Bucket=bucket, Key=blob_key(sha))["Body"].read() == data
    assert await download(stub, info.uri, md) == data
    for offset, length in [(0, 1), (size // 3, size // 3), (size - 1, 0), (7, 0),
                           (PART_MB * MiB - 3, 10)]:
        if offset >= size:
            continue
        end = size if length == 0 else min(size, offset + length)
        assert await download(stub, info.uri, md, offset, length) == data[offset:end]
    await eventually(lambda: leftovers(s3, bucket) == [], what="no partial uploads")
    # Nothing was written to the local files directory but the (empty) thumbnail cache.
    assert not (server.data_dir / "files" / "blobs").exists()


async def test_identical_content_is_one_blob_until_the_last_file_goes(  # type: ignore[no-untyped-def]
        stub, s3: S3Endpoint, bucket: str) -> None:
    data = text(PART_MB * MiB + 1)  # multipart
    sha = hashlib.sha256(data).hexdigest()
    mds = [project() for _ in range(3)]
    files = await asyncio.gather(*(upload(stub, f"copy{i}.txt", data, md)
                                   for i, md in enumerate(mds)))
    assert {f.sha256 for f in files} == {sha} and len({f.uri for f in files}) == 3
    assert s3.keys(bucket, blob_key(sha)) == [blob_key(sha)]
    for f, md in list(zip(files, mds, strict=True))[:2]:
        await stub.DeleteFile(pb.DeleteFileRequest(uri=f.uri), metadata=md)
    assert s3.keys(bucket, blob_key(sha)) == [blob_key(sha)]
    assert await download(stub, files[2].uri, mds[2]) == data
    await stub.DeleteFile(pb.DeleteFileRequest(uri=files[2].uri), metadata=mds[2])
    assert s3.keys(bucket, blob_key(sha)) == []


async def test_a_file_in_use_is_not_deleted(stub, server: ServerProcess, s3: S3Endpoint,  # type: ignore[no-untyped-def]
                                            bucket: str) -> None:
    md = project()
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (int.from_bytes(os.urandom(1)), 200, 0)).save(buffer, "PNG")
    image = await upload(stub, "green.png", buffer.getvalue(), md)
    async with grpc.aio.insecure_channel(server.address) as channel:
        jobs = batch_job_service_pb2_grpc.BatchJobServiceStub(channel)
        job = (await jobs.CreateJob(batch_pb.CreateJobRequest(), metadata=md)).job
        await jobs.AddRequests(batch_pb.AddRequestsRequest(job_id=job.job_id, requests=[
            batch_pb.BatchRequest(request_id="g", content_parts=[
                batch_pb.ContentPart(text="What colour?"),
                batch_pb.ContentPart(image=batch_pb.ImagePart(uri=image.uri))])]), metadata=md)
        reason, meta, _ = await fails(lambda: stub.DeleteFile(
            pb.DeleteFileRequest(uri=image.uri), metadata=md), grpc.StatusCode.FAILED_PRECONDITION)
    assert reason == "FILE_IN_USE" and job.job_id in meta["tables"]
    assert s3.keys(bucket, blob_key(image.sha256)) == [blob_key(image.sha256)]
    # The thumbnail is rendered from the object store's content.
    thumb = await stub.GetThumbnail(pb.GetThumbnailRequest(uri=image.uri, size=2), metadata=md)
    assert Image.open(io.BytesIO(thumb.content)).size == (2, 2)


def _blocking_upload_error(address: str, parts: Iterator[pb.UploadFileRequest],
                           md: Metadata) -> grpc.RpcError:
    with grpc.insecure_channel(address) as ch:
        try:
            file_service_pb2_grpc.FileServiceStub(ch).UploadFile(parts, metadata=md, timeout=60)
        except grpc.RpcError as err:
            return err
    raise AssertionError("the upload succeeded")


async def test_a_failed_multipart_upload_leaves_nothing(stub, server: ServerProcess,  # type: ignore[no-untyped-def]
                                                        s3: S3Endpoint, bucket: str) -> None:
    md = project()
    data = text(2 * PART_MB * MiB + 5)
    sha = hashlib.sha256(data).hexdigest()
    err = await asyncio.to_thread(_blocking_upload_error, server.address,
                                  requests("bad.txt", data, sha256="0" * 64), md)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    await eventually(lambda: leftovers(s3, bucket) == [], what="partial upload removed")
    assert blob_key(sha) not in s3.keys(bucket, "rf/blobs/")
    assert (await stub.ListFiles(pb.ListFilesRequest(), metadata=md)).total == 0


async def stalling(sent: asyncio.Event, size: int) -> AsyncIterator[pb.UploadFileRequest]:
    yield pb.UploadFileRequest(metadata=pb.FileMetadata(name="slow.txt"))
    for start in range(0, size, MiB):
        yield pb.UploadFileRequest(chunk=text(min(MiB, size - start)))
    sent.set()
    await asyncio.sleep(60)
    yield pb.UploadFileRequest(chunk=b"never")  # pragma: no cover


async def test_a_cancelled_multipart_upload_leaves_nothing(stub, s3: S3Endpoint,  # type: ignore[no-untyped-def]
                                                           bucket: str) -> None:
    md = project()
    sent = asyncio.Event()
    call = stub.UploadFile(stalling(sent, 2 * PART_MB * MiB + 1), metadata=md, timeout=60)
    await sent.wait()
    await eventually(lambda: s3.multipart_uploads(bucket) != [], what="multipart started")
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await eventually(lambda: leftovers(s3, bucket) == [], what="partial upload removed")
    assert (await stub.ListFiles(pb.ListFilesRequest(), metadata=md)).total == 0


async def test_a_killed_servers_partial_upload_is_swept_on_start(
        tmp_path: Path, s3: S3Endpoint) -> None:
    bucket = s3.bucket()
    env = s3.server_env(bucket, ROWFORGE_FILES_PART_MB=str(PART_MB))
    proc = ServerProcess(tmp_path / "a", env=env).start()
    try:
        async with grpc.aio.insecure_channel(proc.address) as channel:
            files = file_service_pb2_grpc.FileServiceStub(channel)
            sent = asyncio.Event()
            call = files.UploadFile(stalling(sent, 2 * PART_MB * MiB + 1), metadata=project())
            await sent.wait()
            await eventually(lambda: s3.multipart_uploads(bucket) != [],
                             what="multipart started")
            proc.kill()
            with pytest.raises(grpc.aio.AioRpcError):
                await call
        assert s3.multipart_uploads(bucket) != []  # left behind by the SIGKILL
    finally:
        proc.kill()
    with ServerProcess(tmp_path / "b", env=env):
        assert leftovers(s3, bucket) == []


async def test_an_unusable_bucket_stops_the_server_at_start(tmp_path: Path, s3: S3Endpoint
                                                            ) -> None:
    proc = ServerProcess(tmp_path, env=s3.server_env("no-such-bucket-here"))
    with pytest.raises(RuntimeError, match="no-such-bucket-here"):
        proc.start()


async def test_two_replicas_share_files(tmp_path: Path, s3: S3Endpoint, shared_database: str) -> None:
    """Replicas with separate data directories on one PostgreSQL and one bucket: an upload
    through one is downloadable, byte for byte, through the other; identical uploads racing
    deletes through both never lose the content of a file that exists."""
    bucket = s3.bucket()
    env = s3.server_env(bucket, ROWFORGE_DATABASE_URL=shared_database,
                        ROWFORGE_FILES_PART_MB=str(PART_MB))
    with ServerProcess(tmp_path / "a", env=env) as a, ServerProcess(tmp_path / "b", env=env) as b:
        async with grpc.aio.insecure_channel(a.address) as ca, \
                grpc.aio.insecure_channel(b.address) as cb:
            sa, sb = (file_service_pb2_grpc.FileServiceStub(c) for c in (ca, cb))
            md = project()
            data = text(PART_MB * MiB + 99)
            info = await upload(sa, "shared.txt", data, md)
            assert await download(sb, info.uri, md) == data
            assert await download(sb, info.uri, md, 5, 10) == data[5:15]
            # Upload and delete the same content through both replicas at once, repeatedly:
            # the cluster-wide guard keeps every surviving file's content.
            small = text(40_000)
            for _round in range(5):
                first = await upload(sa, "x.txt", small, md)
                second_task = asyncio.create_task(upload(sb, "y.txt", small, md))
                await sa.DeleteFile(pb.DeleteFileRequest(uri=first.uri), metadata=md)
                second = await second_task
                assert await download(sa, second.uri, md) == small
                await sb.DeleteFile(pb.DeleteFileRequest(uri=second.uri), metadata=md)
                assert s3.keys(bucket, blob_key(second.sha256)) == []


def rss_anon(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no RssAnon")


async def test_memory_does_not_grow_with_the_file(stub, server: ServerProcess,  # type: ignore[no-untyped-def]
                                                 s3: S3Endpoint, bucket: str) -> None:
    """Uploads go up as streamed multipart parts and come back streamed: the server's heap
    peak is about the same for 40 MiB and 160 MiB (parts, chunks and gRPC's flow-control
    window, never the file)."""
    assert server.process is not None
    pid = server.process.pid
    md = project()
    block = text(MiB)
    peak = 0
    stop = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, rss_anon(pid))
            await asyncio.sleep(0.01)

    await upload(stub, "warm.txt", text(2 * PART_MB * MiB), md)  # first-use buffers
    sampler = asyncio.create_task(sample())
    grew: dict[str, float] = {}
    try:
        for size_mib in (40, 160):
            hasher = hashlib.sha256()

            def parts(n: int = size_mib, h: Any = hasher) -> Iterator[pb.UploadFileRequest]:
                yield pb.UploadFileRequest(metadata=pb.FileMetadata(name=f"big{n}.txt"))
                for _ in range(n):
                    h.update(block)
                    yield pb.UploadFileRequest(chunk=block)

            before, peak = rss_anon(pid), 0
            info = (await stub.UploadFile(parts(), metadata=md, timeout=120)).file
            grew[f"upload {size_mib} MiB"] = (peak - before) / MiB
            assert info.size == size_mib * MiB and info.sha256 == hasher.hexdigest()
            before, peak = rss_anon(pid), 0
            received = hashlib.sha256()
            async for message in stub.DownloadFile(pb.DownloadFileRequest(uri=info.uri),
                                                   metadata=md, timeout=120):
                if message.WhichOneof("part") == "chunk":
                    received.update(message.chunk)
            grew[f"download {size_mib} MiB"] = (peak - before) / MiB
            assert received.hexdigest() == info.sha256
    finally:
        stop.set()
        await sampler
    # Measured: uploads +28 MiB (40 MiB file) and +41 MiB (160 MiB), downloads +0-12 MiB.
    assert grew["upload 160 MiB"] - grew["upload 40 MiB"] < 40, grew
    assert max(grew.values()) < 80, grew
