"""Three replicas behind nginx on one PostgreSQL and one S3 endpoint (moto), with a mixed
workload through the load balancer: uploads, knowledge rows + HybridSearch, StreamAddRows with
LLM columns against the fake provider, and a 2,000-request batch job. Mid-way one replica is
SIGKILLed and another SIGTERMed (drained). Afterwards, with both restarted: every batch
request has exactly one result, no cell is left PENDING/RUNNING, every upload is downloadable
byte-identical from every replica, and every acknowledged knowledge row is found by search on
every replica.

Skipped, with the reason, when PostgreSQL is unreachable or nginx is not installed (.ci/run
installs Debian's nginx-light)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest

from deploy.cluster import nginx
from rowforge.v1 import batch_job_service_pb2 as bpb
from rowforge.v1 import batch_job_service_pb2_grpc, file_service_pb2_grpc, table_service_pb2_grpc
from rowforge.v1 import file_service_pb2 as fpb
from rowforge.v1 import table_service_pb2 as tpb
from tests.conftest import assert_no_unhandled_errors, server_env
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.generation_support import (
    ACTION,
    DONE,
    ERROR,
    PENDING,
    RUNNING,
    SKIPPED,
    create_table,
    input_col,
    llm_col,
    struct,
)
from tests.integration.test_batch_support import add_all, check_complete, results, text_request
from tests.integration.test_knowledge_service import Client
from tests.support.s3 import S3Endpoint, moto_server
from tests.support.server import ServerProcess
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(600)

REQUESTS = 2000
STREAM_ROWS = 100  # per stream; three streams
STREAMS = 3
UPLOADS = 12
KNOWLEDGE_ROWS = 60
MiB = 1024 * 1024


def _nginx_missing() -> str | None:
    if shutil.which("nginx") or os.path.exists("/usr/sbin/nginx"):
        return None
    return "nginx is not installed (apt-get install nginx-light): cluster tests skipped"


@pytest.fixture
def database(shared_database: str) -> str:
    if reason := _nginx_missing():
        pytest.skip(reason)
    return shared_database


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI.start_in_thread(latency=0.05)
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def s3() -> Iterator[S3Endpoint]:
    with moto_server() as endpoint:
        yield endpoint


class Cluster:
    def __init__(self, tmp_path: Path, env: dict[str, str]) -> None:
        self.tmp_path = tmp_path
        self.env = env
        self.replicas = [self._replica(i) for i in range(3)]

    def _replica(self, i: int) -> ServerProcess:
        return ServerProcess(self.tmp_path / f"replica-{i}", env={
            **self.env, "ROWFORGE_WORKER_ID": f"replica-{i}"})

    def restart(self, i: int) -> None:
        old = self.replicas[i]
        self.replicas[i] = ServerProcess(old.data_dir, env=old.env, port=old.port).start()


def text(i: int) -> str:
    return f"Chaos note {i}: pump p{i * 11 % 89} pressure {i * 3} bar, line l{i}k."


async def with_retries(call, attempts: int = 10):  # type: ignore[no-untyped-def]
    """A call through the load balancer, retried on UNAVAILABLE (a replica going away)."""
    for attempt in range(attempts):
        try:
            return await call()
        except grpc.aio.AioRpcError as err:
            if err.code() != grpc.StatusCode.UNAVAILABLE or attempt == attempts - 1:
                raise
            await asyncio.sleep(0.2)
    raise AssertionError("unreachable")


async def download(stub: file_service_pb2_grpc.FileServiceStub, uri: str, md) -> bytes:  # type: ignore[no-untyped-def]
    parts = [m async for m in stub.DownloadFile(fpb.DownloadFileRequest(uri=uri), metadata=md,
                                                timeout=60)]
    return b"".join(m.chunk for m in parts[1:])


@contextlib.asynccontextmanager
async def channel(address: str) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(address) as ch:
        yield ch


async def test_chaos(tmp_path: Path, database: str, fake: FakeOpenAI, s3: S3Endpoint) -> None:
    bucket = s3.bucket()
    env = {**server_env(fake), **s3.server_env(bucket, ROWFORGE_FILES_PART_MB="5"),
           "ROWFORGE_DATABASE_URL": database, "ROWFORGE_REPLICA_LEASE_S": "3",
           "ROWFORGE_DRAIN_DELAY_S": "1", "ROWFORGE_GRACE_PERIOD_S": "5"}
    cluster = Cluster(tmp_path, env)
    for proc in cluster.replicas:
        proc.start()
    md = (("x-project-id", f"chaos-{uuid.uuid4().hex[:8]}"),)
    try:
        with nginx(lb_port := _free_port(), [p.address for p in cluster.replicas],
                   tmp_path / "nginx"):
            async with channel(f"127.0.0.1:{lb_port}") as lb:
                files = file_service_pb2_grpc.FileServiceStub(lb)
                tables = table_service_pb2_grpc.TableServiceStub(lb)
                jobs = batch_job_service_pb2_grpc.BatchJobServiceStub(lb)
                kb = Client(lb, md)

                # Uploads (some multipart) and knowledge rows, through the balancer.
                uploads: dict[str, bytes] = {}
                for i in range(UPLOADS):
                    data = os.urandom(6 * MiB if i % 4 == 0 else 1000 + i * 777)
                    data = data.hex().encode()[:len(data)]

                    def parts(data: bytes = data, i: int = i) -> Iterator[fpb.UploadFileRequest]:
                        yield fpb.UploadFileRequest(metadata=fpb.FileMetadata(name=f"f{i}.txt"))
                        for start in range(0, len(data), MiB):
                            yield fpb.UploadFileRequest(chunk=data[start:start + MiB])

                    info = (await with_retries(lambda parts=parts: files.UploadFile(
                        parts(), metadata=md, timeout=60))).file
                    uploads[info.uri] = data
                await kb.create("kb")
                knowledge: dict[str, str] = {}
                for start in range(0, KNOWLEDGE_ROWS, 20):
                    ids = await kb.add([{"Title": f"n{i}", "Text": text(i)}
                                        for i in range(start, start + 20)], table_id="kb")
                    knowledge.update(zip(ids, (text(i) for i in range(start, start + 20)),
                                         strict=True))

                # A batch job and a generating stream, then the chaos.
                await create_table(tables, md, "t", [
                    input_col("q"), llm_col("answer", "Answer ${q}", model="fake/gpt")])
                job = (await jobs.CreateJob(bpb.CreateJobRequest(model="fake/gpt"),
                                            metadata=md)).job
                ids = [f"r{i}" for i in range(REQUESTS)]
                await add_all(jobs, md, job.job_id, [text_request(i) for i in ids])
                await jobs.SubmitJob(bpb.SubmitJobRequest(job_id=job.job_id), metadata=md)
                # Rows one after another: the streams are still generating during the chaos.
                streams = [tables.StreamAddRows(tpb.StreamAddRowsRequest(
                    table_type=ACTION, table_id="t",
                    data=[struct({"q": f"question {s} {i}"}) for i in range(STREAM_ROWS)],
                    concurrent=False), metadata=md) for s in range(STREAMS)]
                consumers = [asyncio.create_task(_drain(stream)) for stream in streams]

                async def progressed() -> bool:
                    reply = await with_retries(lambda: jobs.GetJob(
                        bpb.GetJobRequest(job_id=job.job_id), metadata=md))
                    return reply.job.metrics.processed_requests >= REQUESTS // 5

                await eventually(progressed, timeout=120, every=0.1)
                assert not all(c.done() for c in consumers), "the streams ended before the chaos"
                cluster.replicas[0].kill()  # SIGKILL
                await asyncio.to_thread(cluster.replicas[1].terminate, 60)  # SIGTERM: drains
                # Calls through the balancer go on: uploads land on the surviving replica.
                for i in range(3):
                    data = f"after the chaos {i}".encode() * 100

                    def late(data: bytes = data, i: int = i) -> Iterator[fpb.UploadFileRequest]:
                        yield fpb.UploadFileRequest(metadata=fpb.FileMetadata(name=f"late{i}.txt"))
                        yield fpb.UploadFileRequest(chunk=data)

                    info = (await with_retries(lambda late=late: files.UploadFile(
                        late(), metadata=md, timeout=60))).file
                    uploads[info.uri] = data
                for consumer in consumers:
                    with contextlib.suppress(grpc.aio.AioRpcError):
                        await consumer
    except BaseException:
        for proc in cluster.replicas:
            proc.kill()
        raise

    # Bring the two back (same ports, same data dirs) and check from every replica.
    try:
        for i in (0, 1):
            cluster.restart(i)
        survivor = cluster.replicas[2].address
        async with channel(survivor) as ch:
            jobs_s = batch_job_service_pb2_grpc.BatchJobServiceStub(ch)
            found, final = await results(jobs_s, md, job.job_id, timeout=240)
            check_complete(final, found, ids)
            tables_s = table_service_pb2_grpc.TableServiceStub(ch)

            async def statuses() -> list[int]:
                out: list[int] = []
                token = ""
                while True:
                    reply = await tables_s.ListRows(tpb.ListRowsRequest(
                        table_type=ACTION, table_id="t", limit=100, page_token=token),
                        metadata=md)
                    out += [r.cells["answer"].status for r in reply.items]
                    token = reply.next_page_token
                    if not token:
                        return out

            async def cells_settled() -> bool:
                return not set(await statuses()) & {PENDING, RUNNING}

            await eventually(cells_settled, timeout=60, what="no cell PENDING/RUNNING")
            final_statuses = await statuses()
            # Final states only: DONE, ERROR (interrupted by the kill) or SKIPPED (a stream
            # cancelled by its client or a draining replica skips the rows it had not begun).
            assert set(final_statuses) <= {DONE, ERROR, SKIPPED}
            print(f"batch: {len(found)} results; rows streamed: {len(final_statuses)}, "
                  f"{final_statuses.count(ERROR)} cells interrupted, "
                  f"{final_statuses.count(SKIPPED)} skipped")
        for proc in cluster.replicas:
            async with channel(proc.address) as ch:
                files_r = file_service_pb2_grpc.FileServiceStub(ch)
                for uri, data in uploads.items():
                    got = await download(files_r, uri, md)
                    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest(), uri
                client = Client(ch, md)
                for row_id, row_text in knowledge.items():
                    reply = await client.search(row_text, table_id="kb", k=3)
                    assert reply.items[0].row.id == row_id, (proc.address, row_text)
    finally:
        for proc in cluster.replicas:
            proc.terminate()
    for proc in cluster.replicas:
        assert_no_unhandled_errors(proc)


async def _drain(stream) -> None:  # type: ignore[no-untyped-def]
    async for _message in stream:
        pass


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
