"""Per-project quotas over a real server: each quota passed once gets RESOURCE_EXHAUSTED
QUOTA_EXCEEDED with a google.rpc.QuotaFailure naming it, and nothing of the refused call is
written; other projects are not affected."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2

from rowforge.v1 import batch_job_service_pb2 as bpb
from rowforge.v1 import (
    batch_job_service_pb2_grpc,
    file_service_pb2,
    file_service_pb2_grpc,
    model_service_pb2_grpc,
    table_service_pb2_grpc,
)
from rowforge.v1 import model_service_pb2 as mpb
from rowforge.v1 import table_service_pb2 as pb
from tests.integration.generation_support import (
    add_rows,
    create_table,
    input_col,
    llm_col,
    upload,
)
from tests.integration.test_batch_support import text_request
from tests.support.server import ServerProcess
from tests.support.status import detail_of, details
from tests.support.waiting import eventually

QUOTAS = {"ROWFORGE_QUOTA_TABLES": "2", "ROWFORGE_QUOTA_ROWS_PER_TABLE": "3",
          "ROWFORGE_QUOTA_STORED_BYTES": "100", "ROWFORGE_QUOTA_BATCH_REQUESTS_PER_DAY": "3",
          "ROWFORGE_QUOTA_PROVIDER_TOKENS_PER_DAY": "300"}


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("quotas"), env=QUOTAS).start() as proc:
        yield proc


def md(project: str) -> tuple[tuple[str, str], ...]:
    return (("x-project-id", project),)


def assert_quota(err: grpc.aio.AioRpcError, quota: str, project: str) -> None:
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err.details()
    reason, meta, _ = details(err)
    assert reason == "QUOTA_EXCEEDED" and meta["quota"] == quota
    failure = detail_of(err, error_details_pb2.QuotaFailure)
    assert failure is not None
    assert failure.violations[0].subject == f"project:{project}"
    assert failure.violations[0].description.startswith(quota)


async def test_tables_and_rows(limited: ServerProcess) -> None:
    async with grpc.aio.insecure_channel(limited.address) as channel:
        stub = table_service_pb2_grpc.TableServiceStub(channel)
        for name in ("a", "b"):
            await create_table(stub, md("tq"), name, [input_col("x")])
        with pytest.raises(grpc.aio.AioRpcError) as third:
            await create_table(stub, md("tq"), "c", [input_col("x")])
        assert_quota(third.value, "tables", "tq")
        with pytest.raises(grpc.aio.AioRpcError) as copy:
            await stub.DuplicateTable(pb.DuplicateTableRequest(
                table_type=1, table_id_src="a", table_id_dst="a2"), metadata=md("tq"))
        assert_quota(copy.value, "tables", "tq")
        listed = await stub.ListTables(pb.ListTablesRequest(), metadata=md("tq"))
        assert sorted(t.id for t in listed.items) == ["a", "b"]
        await create_table(stub, md("other"), "c", [input_col("x")])  # per project

        await add_rows(stub, md("tq"), "a", [{"x": "1"}, {"x": "2"}])
        with pytest.raises(grpc.aio.AioRpcError) as rows:
            await add_rows(stub, md("tq"), "a", [{"x": "3"}, {"x": "4"}])
        assert_quota(rows.value, "rows_per_table", "tq")
        assert details(rows.value)[1] == {"quota": "rows_per_table", "limit": "3",
                                          "used": "2", "requested": "2"}
        page = await stub.ListRows(pb.ListRowsRequest(table_type=1, table_id="a"),
                                   metadata=md("tq"))
        assert page.total == 2  # nothing of the refused call was written
        await add_rows(stub, md("tq"), "a", [{"x": "3"}])


async def test_stored_bytes(limited: ServerProcess) -> None:
    async with grpc.aio.insecure_channel(limited.address) as channel:
        await upload(channel, md("fq"), "a.txt", b"a" * 60)
        with pytest.raises(grpc.aio.AioRpcError) as second:
            await upload(channel, md("fq"), "b.txt", b"b" * 60)
        assert_quota(second.value, "stored_bytes", "fq")
        files = file_service_pb2_grpc.FileServiceStub(channel)
        listed = await files.ListFiles(file_service_pb2.ListFilesRequest(), metadata=md("fq"))
        assert [f.name for f in listed.items] == ["a.txt"]
        tmp = Path(limited.data_dir) / "files" / "tmp"
        assert not tmp.exists() or not any(tmp.iterdir())  # the refused upload left nothing


async def test_batch_requests_per_day(limited: ServerProcess) -> None:
    async with grpc.aio.insecure_channel(limited.address) as channel:
        stub = batch_job_service_pb2_grpc.BatchJobServiceStub(channel)
        job = (await stub.CreateJob(bpb.CreateJobRequest(), metadata=md("bq"))).job
        await stub.AddRequests(bpb.AddRequestsRequest(
            job_id=job.job_id, requests=[text_request(f"r{i}") for i in range(3)]),
            metadata=md("bq"))
        with pytest.raises(grpc.aio.AioRpcError) as more:
            await stub.AddRequests(bpb.AddRequestsRequest(
                job_id=job.job_id, requests=[text_request("r3")]), metadata=md("bq"))
        assert_quota(more.value, "batch_requests_per_day", "bq")
        got = (await stub.GetJob(bpb.GetJobRequest(job_id=job.job_id), metadata=md("bq"))).job
        assert got.metrics.total_requests == 3


async def test_provider_tokens_per_day(limited: ServerProcess) -> None:
    """Every model call of a project counts: once its tokens of the last 24 h reach the quota,
    direct calls are refused, table cells fail with the reason and batch requests fail
    without retries; another project calls on."""
    chat = mpb.CreateChatCompletionRequest(
        model="rowforge/chat", max_tokens=40,
        messages=[mpb.ChatMessage(role="user", content="Tell me about quotas " * 8)])
    async with grpc.aio.insecure_channel(limited.address) as channel:
        models = model_service_pb2_grpc.ModelServiceStub(channel)
        used = 0
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            for _ in range(50):
                reply = await models.CreateChatCompletion(chat, metadata=md("pq"))
                used += reply.completion.usage.total_tokens
        assert_quota(refused.value, "provider_tokens_per_day", "pq")
        assert 300 <= used < 300 + 200  # refused on the first call after the quota was used
        assert int(details(refused.value)[1]["used"]) == used
        await models.CreateChatCompletion(chat, metadata=md("other"))  # per project

        tables = table_service_pb2_grpc.TableServiceStub(channel)
        await create_table(tables, md("pq"), "t", [
            input_col("x"), llm_col("y", prompt="Reply to ${x}", model="rowforge/chat")])
        added = await add_rows(tables, md("pq"), "t", [{"x": "hi"}])
        cell = added.rows[0].columns["y"]
        assert cell.status == pb.CELL_STATUS_ERROR and "provider_tokens_per_day" in cell.error

        batches = batch_job_service_pb2_grpc.BatchJobServiceStub(channel)
        job = (await batches.CreateJob(bpb.CreateJobRequest(model="rowforge/chat"),
                                       metadata=md("pq"))).job
        await batches.AddRequests(bpb.AddRequestsRequest(
            job_id=job.job_id, requests=[text_request("q0")]), metadata=md("pq"))
        await batches.SubmitJob(bpb.SubmitJobRequest(job_id=job.job_id), metadata=md("pq"))

        async def failed() -> bool:
            got = (await batches.GetJob(bpb.GetJobRequest(job_id=job.job_id),
                                        metadata=md("pq"))).job
            return got.metrics.failed_requests == 1

        await eventually(failed, timeout=30, what="the batch request failed")
        info = await batches.GetRequest(bpb.GetRequestRequest(
            job_id=job.job_id, request_id="q0"), metadata=md("pq"))
        assert (info.result.error.reason, info.result.error.retryable) == ("QUOTA_EXCEEDED", False)
        assert info.attempts == 1  # not retried: waiting does not lift it
