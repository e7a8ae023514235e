"""The AjaxAI-shaped batch API against a fake BatchJobService/FileService: client-side batching
in ``job.add_request``, request building (schemas, metadata, images), resumable results parsed
into output models, the callbacks thread, errors."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from pydantic import BaseModel

from rowforge.clients import _convert as conv
from rowforge.clients.batch import (
    AjaxAiRequestItem,
    BatchRequestEvent,
    create_batch_job,
    get_batch_job,
)
from rowforge.clients.batch.exceptions import AjaxAiJobNotFoundError
from rowforge.clients.exceptions import InvalidArgumentError
from rowforge.v1 import batch_job_service_pb2 as bpb
from rowforge.v1 import batch_job_service_pb2_grpc, common_pb2, file_service_pb2_grpc
from rowforge.v1 import file_service_pb2 as fpb
from tests.support.fake_grpc import FakeServer, rich_status


class Product(BaseModel):
    title: str
    features: list[str]


class Tracking(BaseModel):
    source: str
    priority: int


class Jobs(batch_job_service_pb2_grpc.BatchJobServiceServicer):
    """One job at a time; results are what the test puts in ``results``."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.created: list[bpb.CreateJobRequest] = []
        self.added: list[bpb.AddRequestsRequest] = []
        self.state = bpb.JOB_STATE_CREATED
        self.results: list[bpb.BatchResult] = []
        self.drop_after: int | None = None  # abort the first StreamResults after N results
        self.cursors: list[int] = []
        self.watch_cursors: list[int] = []

    def _job(self) -> bpb.Job:
        n = sum(len(a.requests) for a in self.added)
        return bpb.Job(job_id="job-1", state=self.state, model="m", max_batch_size=3,
                       metrics=bpb.JobMetrics(total_requests=n, processed_requests=len(
                           self.results), successful_requests=len(self.results),
                           total_tokens=42, duration_seconds=1.5))

    async def CreateJob(self, request, context):
        self.created.append(request)
        return bpb.CreateJobResponse(job=self._job())

    async def AddRequests(self, request, context):
        self.added.append(request)
        self.state = bpb.JOB_STATE_POPULATING
        return bpb.AddRequestsResponse(added_count=len(request.requests), total_requests=sum(
            len(a.requests) for a in self.added))

    async def SubmitJob(self, request, context):
        self.state = bpb.JOB_STATE_SUCCEEDED
        return bpb.SubmitJobResponse(job=self._job())

    async def GetJob(self, request, context):
        if request.job_id != "job-1":
            await context.abort_with_status(rich_status(
                grpc.StatusCode.NOT_FOUND, "job not found", reason="JOB_NOT_FOUND"))
        return bpb.GetJobResponse(job=self._job())

    async def CancelJob(self, request, context):
        self.state = bpb.JOB_STATE_CANCELLED
        return bpb.CancelJobResponse(job=self._job())

    async def GetRequest(self, request, context):
        return bpb.GetRequestResponse(request_id=request.request_id,
                                      state=bpb.REQUEST_STATE_RUNNING, attempts=2)

    async def StreamResults(self, request, context):
        self.cursors.append(request.cursor)
        first_call = len(self.cursors) == 1
        sent = 0
        for result in self.results:
            if result.sequence <= request.cursor:
                continue
            if first_call and self.drop_after is not None and sent == self.drop_after:
                await context.abort_with_status(rich_status(grpc.StatusCode.UNAVAILABLE,
                                                            "replica going away"))
            yield bpb.StreamResultsResponse(result=result)
            sent += 1
        yield bpb.StreamResultsResponse(job=self._job())

    async def WatchJob(self, request, context):
        self.watch_cursors.append(request.cursor)
        for result in self.results:
            kind = (bpb.JOB_EVENT_TYPE_REQUEST_SUCCEEDED
                    if result.state == bpb.REQUEST_STATE_SUCCEEDED
                    else bpb.JOB_EVENT_TYPE_REQUEST_FAILED)
            yield bpb.WatchJobResponse(sequence=result.sequence, event_type=kind,
                                       request_id=result.request_id, result=result,
                                       state=bpb.JOB_STATE_PROCESSING)
        yield bpb.WatchJobResponse(sequence=len(self.results) + 1,
                                   event_type=bpb.JOB_EVENT_TYPE_STATE_CHANGED,
                                   state=bpb.JOB_STATE_SUCCEEDED)


class Files(file_service_pb2_grpc.FileServiceServicer):
    def __init__(self) -> None:
        self.uploads: list[tuple[str, int]] = []

    async def UploadFile(self, request_iterator, context):
        name, size = "", 0
        async for part in request_iterator:
            if part.WhichOneof("part") == "metadata":
                name = part.metadata.name
            else:
                size += len(part.chunk)
        self.uploads.append((name, size))
        return fpb.UploadFileResponse(file=fpb.FileInfo(uri=f"file://p/f1/{name}", name=name,
                                                    size=size))


def _ok(seq: int, request_id: str, text: str, parsed: Any = None) -> bpb.BatchResult:
    out = bpb.BatchResult(sequence=seq, request_id=request_id, state=bpb.REQUEST_STATE_SUCCEEDED,
                          response_text=text, attempts=1,
                          usage=common_pb2.Usage(prompt_tokens=3, completion_tokens=4,
                                                 total_tokens=7))
    if parsed is not None:
        out.response_json.CopyFrom(conv.value_pb(parsed))
    out.metadata.CopyFrom(conv.struct_pb({"source": "test"}))
    return out


def _failed(seq: int, request_id: str) -> bpb.BatchResult:
    return bpb.BatchResult(sequence=seq, request_id=request_id, state=bpb.REQUEST_STATE_FAILED,
                           error=common_pb2.ItemError(code="UNAVAILABLE", reason="PROVIDER_ERROR",
                                                  message="the model is overloaded"),
                           attempts=5)


@pytest.fixture(scope="module")
def jobs() -> Jobs:
    return Jobs()


@pytest.fixture(scope="module")
def files() -> Files:
    return Files()


@pytest.fixture(scope="module")
def fake(jobs: Jobs, files: Files) -> Iterator[FakeServer]:
    with FakeServer([jobs, files]) as server:
        yield server


@pytest.fixture
def env(fake: FakeServer, jobs: Jobs, monkeypatch: pytest.MonkeyPatch) -> FakeServer:
    jobs.reset()
    monkeypatch.setenv("ROWFORGE_ADDRESS", fake.address)
    monkeypatch.delenv("ROWFORGE_TOKEN", raising=False)
    monkeypatch.setenv("AJAXAI_API_KEY", "seed-key")
    return fake


def test_create_job_parameters_and_key_from_env(env: FakeServer, jobs: Jobs) -> None:
    job = create_batch_job(model="gemini-2.0-flash", temperature=0.7, max_output_tokens=99,
                           system_instruction="be kind", job_type="t", metadata={"a": 1},
                           max_batch_size=3)
    request = jobs.created[-1]
    assert (request.model, request.max_output_tokens, request.system_instruction,
            request.job_type, request.max_batch_size) == ("gemini-2.0-flash", 99, "be kind",
                                                          "t", 3)
    assert request.temperature == pytest.approx(0.7)
    assert conv.struct_py(request.metadata) == {"a": 1}
    assert request.idempotency_key  # generated, so a retried CreateJob is safe
    assert env.calls[-1].metadata["authorization"] == "Bearer seed-key"
    assert job.job_id == "job-1" and job.get_state() == "created"


def test_add_request_batches_client_side(env: FakeServer, jobs: Jobs) -> None:
    job = create_batch_job(max_batch_size=3)
    replies = [job.add_request(AjaxAiRequestItem(request_id=f"r{i}").add_text(f"prompt {i}"))
               for i in range(7)]
    assert [r.queued for r in replies] == [True, True, False, True, True, False, True]
    assert [len(a.requests) for a in jobs.added] == [3, 3]
    assert replies[5].total_requests == 6
    job.submit()
    assert [len(a.requests) for a in jobs.added] == [3, 3, 1]
    sent = [r.request_id for a in jobs.added for r in a.requests]
    assert sent == [f"r{i}" for i in range(7)]
    assert env.methods()[-2:] == ["AddRequests", "SubmitJob"]


def test_request_building(env: FakeServer, jobs: Jobs, files: Files, tmp_path: Path) -> None:
    image = tmp_path / "photo.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 5000)
    job = create_batch_job(max_batch_size=5)
    item = (AjaxAiRequestItem(request_id="p1", output_model=Product)
            .add_text("Describe")
            .add_image("https://example.com/a.jpg")
            .add_image(str(image))
            .add_request_metadata(Tracking(source="crm", priority=2)))
    job.add_request(item)
    job.flush()
    request = jobs.added[-1].requests[0]
    parts = [p.WhichOneof("part") for p in request.content_parts]
    assert parts == ["text", "image", "image"]
    assert request.content_parts[1].image.uri == "https://example.com/a.jpg"
    assert request.content_parts[2].image.uri == "file://p/f1/photo.png"
    assert files.uploads[-1] == ("photo.png", image.stat().st_size)
    assert request.output_schema_name == "Product"
    schema = conv.struct_py(request.output_schema)
    assert schema["required"] == ["title", "features"]
    assert conv.struct_py(request.metadata) == {"source": "crm", "priority": 2}


def test_bad_requests_are_refused_before_sending(env: FakeServer, jobs: Jobs) -> None:
    job = create_batch_job(max_batch_size=10)
    job.add_request(AjaxAiRequestItem(request_id="same").add_text("x"))
    with pytest.raises(InvalidArgumentError, match="already queued"):
        job.add_request(AjaxAiRequestItem(request_id="same").add_text("y"))
    with pytest.raises(InvalidArgumentError, match="content_parts"):
        job.add_request(AjaxAiRequestItem(request_id="empty"))
    assert jobs.added == []
    assert job.flush() == 1  # the valid one is sent
    assert [r.request_id for m in jobs.added for r in m.requests] == ["same"]
    with pytest.raises(InvalidArgumentError):
        AjaxAiRequestItem(request_id="x", output_model=dict)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        create_batch_job(max_batch_size=101)


def test_results_resume_after_a_dropped_stream(env: FakeServer, jobs: Jobs) -> None:
    jobs.results = [_ok(1, "a", '{"title": "A", "features": ["x"]}',
                        {"title": "A", "features": ["x"]}),
                    _ok(2, "b", '{"title": "B", "features": []}'),
                    _failed(3, "c"),
                    _ok(4, "d", '{"nope": 1}', {"nope": 1}),
                    _ok(5, "e", "not json")]
    jobs.drop_after = 2
    job = create_batch_job()
    results = list(job.get_results(output_model=Product))
    assert [r.request.request_id for r in results] == ["a", "b", "c", "d", "e"]
    assert jobs.cursors == [0, 2]  # reconnected after the last result seen
    a, b, c, d, e = results
    assert isinstance(a.response, Product) and a.response.title == "A"
    assert a.response_model is a.response and a.summary.status == "succeeded"
    assert b.response_model.title == "B"  # parsed from the text when no JSON value came
    assert c.response_model is None and c.summary.status == "failed"
    assert c.summary.status_message == "the model is overloaded"
    assert c.summary.error_reason == "PROVIDER_ERROR" and c.response.text == ""
    assert d.response_model is None and "does not match Product" in d.summary.status_message
    assert e.response_model is None and e.response.text == "not json"
    assert a.usage.total_tokens == 7 and a.usage.input_tokens == 3
    assert a.metadata == {"source": "test"}


def test_results_use_the_items_output_model(env: FakeServer, jobs: Jobs) -> None:
    jobs.results = [_ok(1, "p", "", {"title": "T", "features": ["f"]}), _ok(2, "q", "plain")]
    job = create_batch_job()
    job.add_request(AjaxAiRequestItem(request_id="p", output_model=Product).add_text("x"))
    job.add_request(AjaxAiRequestItem(request_id="q").add_text("y"))
    job.submit()
    p, q = job.get_results()
    assert isinstance(p.response_model, Product)
    assert p.response.text == ""  # no output_model asked for: the response stays text
    assert q.response_model is None and q.response.text == "plain"


def test_state_metrics_request_state_and_cancel(env: FakeServer, jobs: Jobs) -> None:
    job = create_batch_job()
    jobs.results = [_ok(1, "a", "x")]
    metrics = job.get_metrics()
    assert (metrics.processed_requests, metrics.total_tokens, metrics.duration_seconds) == (
        1, 42, 1.5)
    assert job.get_request_state("a") == "running"
    assert job.cancel() == "cancelled"
    assert job.get_state() == "cancelled"


def test_callbacks_run_on_a_thread_and_survive_exceptions(
        env: FakeServer, jobs: Jobs, caplog: pytest.LogCaptureFixture) -> None:
    jobs.results = [_ok(1, "ok_1", "", {"title": "A", "features": []}),
                    _ok(2, "error_trigger", "boom"), _failed(3, "bad"), _ok(4, "ok_2", "x")]
    seen: list[BatchRequestEvent] = []
    threads: set[str] = set()

    def flaky(event: BatchRequestEvent) -> None:
        threads.add(threading.current_thread().name)
        if "error_trigger" in event.request.request_id:
            raise ValueError("simulated processing error in callback")

    job = create_batch_job()
    job.on_request_complete(flaky)
    job.on_request_complete(seen.append)
    job.add_request(AjaxAiRequestItem(request_id="ok_1", output_model=Product).add_text("a"))
    with caplog.at_level(logging.ERROR, logger="rowforge.clients.batch"):
        job.submit()
        assert job.wait(timeout=10) == "succeeded"
    assert [e.request_id for e in seen] == ["ok_1", "error_trigger", "bad", "ok_2"]
    assert [e.event_type for e in seen] == ["request_succeeded", "request_succeeded",
                                            "request_failed", "request_succeeded"]
    assert isinstance(seen[0].result.response_model, Product)
    assert seen[1].result.response.text == "boom"
    assert seen[2].error == "the model is overloaded"
    assert threads and threading.current_thread().name not in threads
    assert any("error_trigger" in r.getMessage() for r in caplog.records)
    assert jobs.watch_cursors == [0]


def test_callbacks_start_at_once_for_a_submitted_job(env: FakeServer, jobs: Jobs) -> None:
    jobs.results = [_ok(1, "a", "x")]
    jobs.state = bpb.JOB_STATE_PROCESSING
    job = get_batch_job("key", "job-1")
    done = threading.Event()
    job.on_request_complete(lambda event: done.set())
    assert done.wait(10)
    job.stop_callbacks()


def test_unknown_job_is_job_not_found(env: FakeServer) -> None:
    with pytest.raises(AjaxAiJobNotFoundError) as info:
        get_batch_job(api_key="key", job_id="nope")
    assert info.value.reason == "JOB_NOT_FOUND"
    with pytest.raises(InvalidArgumentError):
        get_batch_job(api_key="key", job_id="")


def test_result_stream_reconnects_then_gives_up(env: FakeServer, jobs: Jobs) -> None:
    from rowforge.clients import RowForge
    from rowforge.clients.exceptions import UnavailableError

    jobs.results = [_ok(1, "a", "x"), _ok(2, "b", "y")]
    jobs.drop_after = 0  # the first call aborts before sending anything; later calls work
    with RowForge(address=env.address) as client:
        assert [r.request_id for r in client.batch.stream_results("job-1")] == ["a", "b"]
        assert jobs.cursors == [0, 0]
        jobs.cursors.clear()  # the next call is a first call again: it fails
        with pytest.raises(UnavailableError):
            list(client.batch.stream_results("job-1", max_reconnects=0))
        assert jobs.cursors == [0]


def test_ajaxai_client_runs_callbacks_of_its_jobs(env: FakeServer, jobs: Jobs) -> None:
    from rowforge.clients.batch import AjaxAiClient

    jobs.results = [_ok(1, "a", "x")]
    seen = threading.Event()
    client = AjaxAiClient(api_key="key")
    job = client.create_batch_job(max_batch_size=5)
    job.on_request_complete(lambda event: seen.set())
    job.add_request(AjaxAiRequestItem(request_id="a").add_text("x"))
    client.start_polling()
    job.submit()
    assert seen.wait(10)
    client.stop_polling()
    client.close()


def test_job_closes_the_connection_it_opened(env: FakeServer) -> None:
    with create_batch_job() as job:
        assert job.get_state() == "created"
    with pytest.raises(ValueError):  # the channel is closed
        job.get_state()
