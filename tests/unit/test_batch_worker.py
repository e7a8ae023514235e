"""The batch worker in-process against the fake OpenAI server: AIMD and Retry-After pauses,
prompt cancellation (local and through a lost lease), graceful stop handing leases back, and
large payloads."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from rowforge.server.batch import (
    BatchService,
    ContentPart,
    JobConfig,
    JobState,
    RequestInput,
    RequestState,
    Result,
)
from rowforge.server.batch.worker import INLINE_PAYLOAD_CHARS
from rowforge.server.config import load_settings
from rowforge.server.providers import ModelRegistry
from rowforge.server.storage.batch_tables import batch_requests
from rowforge.server.storage.db import Database
from tests.fakes.openai_server import FakeOpenAI
from tests.support.waiting import eventually

P = "proj"
KEY_ENV = "ROWFORGE_TEST_BATCH_WORKER_KEY"


@pytest.fixture
async def fake(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeOpenAI]:
    monkeypatch.setenv(KEY_ENV, "sk-test")
    async with FakeOpenAI() as server:
        yield server


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'batch.db'}")
    await database.prepare_schema()
    try:
        yield database
    finally:
        await database.close()


Factory = Callable[..., BatchService]


@pytest.fixture
async def make(db: Database, fake: FakeOpenAI, tmp_path: Path) -> AsyncIterator[Factory]:
    made: list[BatchService] = []
    models = ModelRegistry.from_config([{
        "id": "fake/gpt", "route": "openai/fake-gpt", "api_base": fake.base_url,
        "api_key_env": KEY_ENV, "capabilities": ["chat"]}])

    def factory(worker_id: str = "w1", **settings: object) -> BatchService:
        values = {"batch_backoff_base_s": 0.01, "batch_backoff_max_s": 0.05,
                  "batch_lease_s": 30.0, **settings}
        service = BatchService(db, models, load_settings(env={}, data_dir=tmp_path, **values),
                               worker_id=worker_id)
        made.append(service)
        return service

    yield factory
    for service in made:
        await service.stop()


async def run(service: BatchService, n: int, *, model: str = "fake/gpt", text: str = "hello {i}"
              ) -> tuple[str, list[Result]]:
    job = await service.create_job(P, JobConfig(model=model))
    for start in range(0, n, 100):
        await service.add_requests(P, job.id, [
            RequestInput(f"r{i}", (ContentPart(text=text.format(i=i)),))
            for i in range(start, min(n, start + 100))])
    await service.submit(P, job.id)
    found = [item async for item in service.results(P, job.id) if isinstance(item, Result)]
    return job.id, found


async def test_a_429_pauses_the_model_until_retry_after(make: Factory, fake: FakeOpenAI) -> None:
    service = make(batch_workers=1)
    await service.start()
    fake.fail_next(1, 429, retry_after=0.3)
    _, found = await run(service, 4)
    assert all(r.state is RequestState.SUCCEEDED for r in found)
    arrivals = [r.timestamp for r in fake.requests_to("/v1/chat/completions")]
    assert len(arrivals) == 5
    assert min(arrivals[1:]) - arrivals[0] >= 0.3  # nothing reached the model sooner
    limiter = service.worker.limiters.for_model(service.models.get("fake/gpt"))
    assert limiter.concurrency.limit == 1


async def test_a_429_halves_the_concurrency_which_then_grows_back(make: Factory,
                                                                   fake: FakeOpenAI) -> None:
    service = make(batch_workers=8)
    await service.start()
    fake.fail_next(1, 429)
    _, found = await run(service, 20)
    assert len(found) == 20 and all(r.state is RequestState.SUCCEEDED for r in found)
    limit = service.worker.limiters.for_model(service.models.get("fake/gpt")).concurrency.limit
    assert 4 <= limit < 8


async def test_cancel_stops_calls_in_flight_at_once(make: Factory, fake: FakeOpenAI) -> None:
    service = make()
    await service.start()
    fake.latency = 30.0
    job = await service.create_job(P, JobConfig(model="fake/gpt"))
    await service.add_requests(P, job.id, [RequestInput(f"r{i}", (ContentPart(text="x"),))
                                           for i in range(3)])
    await service.submit(P, job.id)
    await eventually(lambda: fake.in_flight == 3)
    await service.cancel(P, job.id)
    assert await eventually(lambda: service.worker.in_flight == 0) < 0.2
    assert await eventually(lambda: fake.in_flight == 0) < 2.0
    found = [i async for i in service.results(P, job.id) if isinstance(i, Result)]
    assert [r.state for r in found] == [RequestState.CANCELLED] * 3


async def test_a_lease_lost_to_another_replica_stops_the_call(make: Factory, fake: FakeOpenAI,
                                                              db: Database) -> None:
    service = make(batch_lease_s=0.6)  # heartbeats every 0.2 s
    other = make("replica-b")  # never started: it only cancels, as another replica would
    await service.start()
    fake.latency = 30.0
    job = await service.create_job(P, JobConfig(model="fake/gpt"))
    await service.add_requests(P, job.id, [RequestInput("r0", (ContentPart(text="x"),))])
    await service.submit(P, job.id)
    await eventually(lambda: fake.in_flight == 1)
    await other.store.cancel(P, job.id)  # this process's worker is not told
    assert await eventually(lambda: fake.in_flight == 0) < 2.0
    assert service.worker.in_flight == 0
    assert (await service.get_job(P, job.id)).metrics.cancelled == 1


async def test_stop_hands_leases_back_for_the_next_worker(make: Factory, fake: FakeOpenAI,
                                                          db: Database) -> None:
    first = make("first")
    await first.start()
    fake.latency = 30.0
    job = await first.create_job(P, JobConfig(model="fake/gpt"))
    await first.add_requests(P, job.id, [RequestInput(f"r{i}", (ContentPart(text="x"),))
                                         for i in range(3)])
    await first.submit(P, job.id)
    await eventually(lambda: fake.in_flight == 3)
    started = time.monotonic()
    await first.stop()
    assert time.monotonic() - started < 2.0
    async with db.read() as conn:
        rows = (await conn.execute(sa.select(batch_requests.c.state, batch_requests.c.lease_owner,
                                             batch_requests.c.attempts))).all()
    assert {tuple(r) for r in rows} == {("pending", None, 0)}  # the attempt was not counted
    fake.latency = 0.0
    second = make("second")
    await second.start()
    found = [i async for i in second.results(P, job.id) if isinstance(i, Result)]
    assert [(r.state, r.attempts) for r in found] == [(RequestState.SUCCEEDED, 1)] * 3
    assert (await second.get_job(P, job.id)).state is JobState.SUCCEEDED


async def test_large_payloads_are_loaded_when_their_call_starts(make: Factory) -> None:
    service = make()
    await service.start()
    # metadata counts in the payload's size (and is never sent to the model)
    blob = "y" * (INLINE_PAYLOAD_CHARS + 100)
    job = await service.create_job(P, JobConfig(model="rowforge/chat", max_output_tokens=16))
    await service.add_requests(P, job.id, [
        RequestInput("big", (ContentPart(text="a long one"),), metadata={"blob": blob}),
        RequestInput("small", (ContentPart(text="hi"),))])
    await service.submit(P, job.id)
    found = {i.request_id: i async for i in service.results(P, job.id) if isinstance(i, Result)}
    assert found["big"].state is RequestState.SUCCEEDED, found["big"].error
    assert found["big"].metadata == '{"blob":"' + blob + '"}'
    assert found["big"].prompt_tokens < 100
    assert found["small"].state is RequestState.SUCCEEDED


async def test_the_builtin_model_runs_a_job_quickly(make: Factory) -> None:
    service = make()
    await service.start()
    started = time.monotonic()
    job_id, found = await run(service, 300, model="rowforge/chat")
    assert time.monotonic() - started < 10
    assert [r.sequence for r in found] == list(range(1, 301))
    job = await service.get_job(P, job_id)
    assert job.state is JobState.SUCCEEDED and job.metrics.throughput_rps > 0
