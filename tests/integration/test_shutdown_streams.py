"""On SIGTERM, streams that only follow a job (WatchJob, StreamResults) end at once with
UNAVAILABLE, reason SERVER_SHUTTING_DOWN and a RetryInfo, instead of holding the whole grace
period; the client resumes them from its cursor elsewhere."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import grpc
from google.rpc import error_details_pb2, status_pb2

from rowforge.v1 import batch_job_service_pb2 as bpb
from rowforge.v1 import batch_job_service_pb2_grpc as bgrpc
from tests.support.server import ServerProcess

GRACE_S = 30


def _details(err: grpc.RpcError) -> tuple[str, float | None]:
    status = next(status_pb2.Status.FromString(v) for k, v in err.trailing_metadata()
                  if k == "grpc-status-details-bin")
    reason, retry = "", None
    for any_ in status.details:
        if any_.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            any_.Unpack(info)
            reason = info.reason
        if any_.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            hint = error_details_pb2.RetryInfo()
            any_.Unpack(hint)
            retry = hint.retry_delay.seconds + hint.retry_delay.nanos / 1e9
    return reason, retry


def test_followers_end_at_once_on_sigterm(tmp_path: Path) -> None:
    proc = ServerProcess(tmp_path, env={"ROWFORGE_GRACE_PERIOD_S": str(GRACE_S)}).start()
    outcomes: dict[str, tuple[grpc.StatusCode, str, float | None, float]] = {}
    try:
        channel = grpc.insecure_channel(proc.address)
        stub = bgrpc.BatchJobServiceStub(channel)
        job = stub.CreateJob(bpb.CreateJobRequest(), timeout=30).job
        stub.AddRequests(bpb.AddRequestsRequest(job_id=job.job_id, requests=[
            bpb.BatchRequest(request_id="r1", content_parts=[bpb.ContentPart(text="hi")])]),
            timeout=30)  # never submitted: the job stays open, the followers wait

        def follow(name: str, stream: object) -> None:
            try:
                for _ in stream:  # type: ignore[attr-defined]
                    pass
            except grpc.RpcError as err:
                outcomes[name] = (err.code(), *_details(err), time.monotonic())

        threads = [
            threading.Thread(target=follow, args=("watch", stub.WatchJob(
                bpb.WatchJobRequest(job_id=job.job_id), timeout=120))),
            threading.Thread(target=follow, args=("results", stub.StreamResults(
                bpb.StreamResultsRequest(job_id=job.job_id), timeout=120))),
        ]
        for thread in threads:
            thread.start()
        time.sleep(1.5)  # both are following
        t0 = time.monotonic()
        proc.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        for thread in threads:
            thread.join(GRACE_S)
        assert proc.process.wait(GRACE_S) == 0  # type: ignore[union-attr]
        exited = time.monotonic() - t0
        channel.close()
    finally:
        proc.kill()
    assert set(outcomes) == {"watch", "results"}, outcomes
    for name, (code, reason, retry, ended) in outcomes.items():
        assert code == grpc.StatusCode.UNAVAILABLE, (name, code)
        assert reason == "SERVER_SHUTTING_DOWN" and retry and retry > 0, (name, reason, retry)
        assert ended - t0 < GRACE_S / 3, (name, ended - t0)
    assert exited < GRACE_S / 2, exited  # the followers did not hold the grace period
