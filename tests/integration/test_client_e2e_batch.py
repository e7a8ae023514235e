"""Batch jobs through the Python client against real servers: the AjaxAI-shaped API
(client-side batching, structured output, images, callbacks, errors), the RPC-level client
(idempotent create, streamed adds, cursors), and results that resume across a server restart."""

from __future__ import annotations

import base64
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel

from rowforge.clients import RowForge
from rowforge.clients import exceptions as ex
from rowforge.clients.batch import AjaxAiRequestItem, create_batch_job, get_batch_job
from rowforge.clients.batch.events import BatchRequestEvent
from rowforge.clients.batch.exceptions import AjaxAiJobNotFoundError
from rowforge.clients.batch_jobs import BatchRequest
from tests.conftest import server_env
from tests.support.server import ServerProcess

PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQ"
                       "GAhKmMIQAAAABJRU5ErkJggg==")


class Colour(BaseModel):
    name: str
    warm: bool


class Tracking(BaseModel):
    source: str


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[RowForge]:
    with RowForge(address=server.address) as c:
        yield c


def test_seed_flow(server: ServerProcess, client: RowForge, tmp_path: Path) -> None:
    image = tmp_path / "pixel.png"
    image.write_bytes(PNG)
    job = create_batch_job(address=server.address, model="rowforge/chat", max_batch_size=10,
                           system_instruction="Be brief.", job_type="seed-flow")
    events: list[BatchRequestEvent] = []
    done = threading.Event()

    def on_complete(event: BatchRequestEvent) -> None:
        events.append(event)
        if len(events) == 25:
            done.set()

    job.on_request_complete(on_complete)
    for i in range(23):
        job.add_request(AjaxAiRequestItem(request_id=f"text_{i}").add_text(f"Say {i}")
                        .add_request_metadata(Tracking(source="test")))
    job.add_request(AjaxAiRequestItem(request_id="colour", output_model=Colour)
                    .add_text("Name a warm colour"))
    job.add_request(AjaxAiRequestItem(request_id="image").add_text("Describe this")
                    .add_image(str(image)))
    assert job.get_state() == "populating"  # two full batches of 10 were sent
    assert job.get_metrics().total_requests == 20
    job.submit()
    results = {r.request.request_id: r for r in job.get_results()}
    assert len(results) == 25 and all(r.summary.status == "succeeded" for r in results.values())
    assert isinstance(results["colour"].response_model, Colour)
    assert results["text_3"].metadata == {"source": "test"}
    assert results["text_3"].usage.total_tokens > 0
    assert done.wait(10) and {e.request_id for e in events} == set(results)
    assert all(e.event_type == "request_succeeded" for e in events)
    assert job.get_state() == "succeeded" and job.get_request_state("image") == "succeeded"
    metrics = job.get_metrics()
    assert (metrics.total_requests, metrics.successful_requests) == (25, 25)
    request = job.get_request("image").request
    assert request.content_parts[1]["uri"].startswith("file://")  # the local image was uploaded

    again = get_batch_job(job_id=job.job_id, address=server.address)
    typed = list(again.get_results(output_model=Colour))
    assert sum(r.response_model is not None for r in typed) == 1
    with pytest.raises(ex.FailedPreconditionError):
        job.cancel()
    with pytest.raises(AjaxAiJobNotFoundError):
        get_batch_job(job_id="job_does_not_exist", address=server.address)


def test_rpc_level_client(client: RowForge) -> None:
    first = client.batch.create_job("rowforge/chat", job_type="rpc", idempotency_key="k-1")
    again = client.batch.create_job("rowforge/chat", job_type="rpc", idempotency_key="k-1")
    assert first.job_id == again.job_id
    with pytest.raises(ex.InvalidArgumentError):
        client.batch.create_job("rowforge/chat", job_type="other", idempotency_key="k-1")
    added = client.batch.add_many(first.job_id, (
        BatchRequest(request_id=f"r{i}", content_parts=[{"type": "text", "text": f"n {i}"}])
        for i in range(250)))
    assert (added.added_count, added.total_requests) == (250, 250)
    with pytest.raises(ex.AlreadyExistsError):
        client.batch.add_requests(first.job_id, [{"request_id": "r0", "content_parts": [
            {"type": "text", "text": "dup"}]}])
    client.batch.submit_job(first.job_id)
    sequences = [r.sequence for r in client.batch.stream_results(first.job_id)]
    assert sequences == list(range(1, 251))
    tail = [r.request_id for r in client.batch.stream_results(first.job_id, cursor=247,
                                                              follow=False)]
    assert len(tail) == 3
    events = list(client.batch.watch_job(first.job_id))
    assert events[-1].event_type == "state_changed" and events[-1].state == "succeeded"
    assert sum(e.event_type == "request_succeeded" for e in events) == 250
    assert [j.job_id for j in client.batch.list_jobs(job_type="rpc").items] == [first.job_id]
    with pytest.raises(ex.InvalidArgumentError) as bad:
        client.batch.add_requests(first.job_id, [{"request_id": "bad id!", "content_parts": [
            {"type": "text", "text": "x"}]}])
    assert bad.value.field_violations


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_results_resume_across_a_server_restart(tmp_path: Path, fake_openai: object) -> None:
    """A reader following a running job loses the server mid-stream; it reconnects after the
    restart from its cursor and gets every result exactly once."""
    port = _free_port()
    env = server_env(fake_openai, ROWFORGE_BATCH_WORKERS="1", ROWFORGE_BATCH_LEASE_S="2")
    proc = ServerProcess(tmp_path, env=env, port=port).start()
    fake_openai.latency = 0.3  # type: ignore[attr-defined]
    try:
        with RowForge(address=proc.address) as client:
            job = client.batch.create_job("fake/gpt")
            client.batch.add_requests(job.job_id, [
                {"request_id": f"r{i}", "content_parts": [{"type": "text", "text": f"q{i}"}]}
                for i in range(6)])
            client.batch.submit_job(job.job_id)
            stream = client.batch.stream_results(job.job_id)
            seen = [next(stream)]
            proc.kill()
            proc = ServerProcess(tmp_path, env=env, port=port).start()
            seen.extend(stream)
            assert [r.sequence for r in seen] == list(range(1, 7))
            assert sorted(r.request_id for r in seen) == [f"r{i}" for i in range(6)]
            assert client.batch.get_job(job.job_id).state == "succeeded"
    finally:
        fake_openai.latency = 0.0  # type: ignore[attr-defined]
        proc.terminate()
        proc.kill()
