"""Load shedding: past ``max_concurrent_rpcs`` a call is refused at once with
RESOURCE_EXHAUSTED (SERVER_OVERLOADED, RetryInfo) instead of queueing; health stays reachable;
a freed slot serves again."""

from __future__ import annotations

import time

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from rowforge.v1 import batch_job_service_pb2 as bpb
from rowforge.v1 import batch_job_service_pb2_grpc, model_service_pb2, model_service_pb2_grpc
from tests.support.server import ServerProcess
from tests.support.status import detail_of, details


def test_calls_past_the_cap_are_shed_with_a_retry_delay(tmp_path) -> None:  # type: ignore[no-untyped-def]
    proc = ServerProcess(tmp_path, env={"ROWFORGE_MAX_CONCURRENT_RPCS": "2"})
    with proc.start(), grpc.insecure_channel(proc.address) as channel:
        batch = batch_job_service_pb2_grpc.BatchJobServiceStub(channel)
        models = model_service_pb2_grpc.ModelServiceStub(channel)
        job = batch.CreateJob(bpb.CreateJobRequest(), timeout=10).job
        # Two followers of a job that never starts hold both slots.
        watchers = [batch.WatchJob(bpb.WatchJobRequest(job_id=job.job_id), timeout=60)
                    for _ in range(2)]
        for watcher in watchers:
            next(watcher)  # the job's current state: the stream is being served
        with pytest.raises(grpc.RpcError) as shed:
            models.ListModels(model_service_pb2.ListModelsRequest(), timeout=10)
        assert shed.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        reason, meta, _ = details(shed.value)
        assert reason == "SERVER_OVERLOADED" and meta["maxConcurrentRpcs"] == "2"
        retry = detail_of(shed.value, error_details_pb2.RetryInfo)
        assert retry is not None and retry.retry_delay.seconds == 1
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(),
                                                            timeout=10)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        watchers[0].cancel()
        for _ in range(50):  # the server sees the cancellation shortly
            try:
                assert models.ListModels(model_service_pb2.ListModelsRequest(), timeout=10).items
                break
            except grpc.RpcError as err:
                assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                time.sleep(0.1)
        else:
            raise AssertionError("a freed slot was not served again")
        watchers[1].cancel()
