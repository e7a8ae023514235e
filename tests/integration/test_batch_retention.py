"""Results are purged after the retention (here about a second); the job stays with its
metrics, and reading the purged results is a clear FAILED_PRECONDITION."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from rowforge.v1 import batch_job_service_pb2 as pb
from rowforge.v1 import batch_job_service_pb2_grpc
from tests.integration.test_batch_support import (
    get_job,
    project,
    run_job,
    text_request,
)
from tests.support.server import ServerProcess
from tests.support.status import fails_on_fields as fails
from tests.support.waiting import eventually

RETENTION_DAYS = 1.0 / 86400  # one second


@pytest.fixture(scope="module")
def short_lived(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {"ROWFORGE_BATCH_RETENTION_DAYS": repr(RETENTION_DAYS)}
    proc = ServerProcess(Path(tmp_path_factory.mktemp("batch-retention")), env=env)
    with proc.start():
        yield proc


async def test_results_are_purged_after_the_retention_and_the_job_stays(
        short_lived: ServerProcess) -> None:
    md = project()
    async with grpc.aio.insecure_channel(short_lived.address) as channel:
        stub = batch_job_service_pb2_grpc.BatchJobServiceStub(channel)
        final, found = await run_job(stub, md, [text_request(f"t{i}") for i in range(5)])
        assert len(found) == 5
        assert final.expire_time.ToNanoseconds() - final.end_time.ToNanoseconds() == \
            pytest.approx(1e9, abs=1e6)

        async def purged() -> bool:
            try:
                await stub.GetRequest(pb.GetRequestRequest(job_id=final.job_id,
                                                           request_id="t0"), metadata=md)
            except grpc.aio.AioRpcError as err:
                return err.code() == grpc.StatusCode.NOT_FOUND
            return False

        await eventually(purged, timeout=15)
        job = await get_job(stub, md, final.job_id)
        assert job.state == pb.JOB_STATE_SUCCEEDED
        assert job.metrics.successful_requests == 5 and job.metrics.total_tokens > 0
        for call in (lambda: stub.StreamResults(pb.StreamResultsRequest(job_id=final.job_id),
                                                metadata=md),
                     lambda: stub.WatchJob(pb.WatchJobRequest(job_id=final.job_id),
                                           metadata=md)):
            reason, _, _ = await fails(call, grpc.StatusCode.FAILED_PRECONDITION)
            assert reason == "RESULTS_EXPIRED"
        # a reader that had everything sees the end, without the purged results
        tail = [m async for m in stub.StreamResults(
            pb.StreamResultsRequest(job_id=final.job_id, cursor=5), metadata=md)]
        assert len(tail) == 1 and tail[0].job.state == pb.JOB_STATE_SUCCEEDED
        reason, _, _ = await fails(lambda: stub.GetRequest(pb.GetRequestRequest(
            job_id=final.job_id, request_id="t0"), metadata=md), grpc.StatusCode.NOT_FOUND)
        assert reason == "RESULTS_EXPIRED"
        listed = await stub.ListJobs(pb.ListJobsRequest(), metadata=md)
        assert [j.job_id for j in listed.items] == [final.job_id]
