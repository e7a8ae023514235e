"""The batch store, work queue and result recorder on SQLite and PostgreSQL: leases, guarded
recording, race-free sequences, cancellation numbering, idempotency, retention."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa

from rowforge.server.batch.model import (
    ContentPart,
    ErrorDetail,
    JobConfig,
    JobState,
    RequestInput,
    RequestState,
)
from rowforge.server.batch.queue import Claim, WorkQueue
from rowforge.server.batch.recorder import FAILED, RETRY, SUCCEEDED, Outcome, ResultRecorder
from rowforge.server.batch.signals import JobSignals
from rowforge.server.batch.store import BatchStore
from rowforge.server.batch.streams import stream_results
from rowforge.server.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from rowforge.server.storage.batch_tables import batch_payloads, batch_requests, batch_results
from rowforge.server.storage.db import Database

P = "proj"


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    await database.prepare_schema()
    try:
        yield database
    finally:
        await database.close()


@pytest.fixture
def store(db: Database) -> BatchStore:
    return BatchStore(db, retention_s=3600)


def requests(n: int, prefix: str = "r") -> list[RequestInput]:
    return [RequestInput(f"{prefix}{i}", (ContentPart(text=f"text {i}"),),
                         metadata={"i": i}) for i in range(n)]


async def submitted_job(store: BatchStore, n: int) -> str:
    job, _ = await store.create_job(P, JobConfig(model="rowforge/chat"))
    for start in range(0, n, 100):
        await store.add_requests(P, job.id, requests(n)[start:start + 100])
    await store.submit(P, job.id)
    return job.id


def ok(claim: Claim, text: str = "answer") -> Outcome:
    return Outcome(claim, SUCCEEDED, response_text=text, prompt_tokens=3, completion_tokens=4,
                   cost_usd=0.5, metadata_json='{"m":1}')


def failed(claim: Claim) -> Outcome:
    return Outcome(claim, FAILED, error=ErrorDetail("UNAVAILABLE", "PROVIDER_UNAVAILABLE",
                                                    "down", True))


def recorder(db: Database, worker: str) -> ResultRecorder:
    return ResultRecorder(db, worker, retention_s=3600)


# --- leases and guarded recording ------------------------------------------------------------

async def test_a_claimed_request_gets_exactly_one_result(db: Database, store: BatchStore) -> None:
    job_id = await submitted_job(store, 5)
    claims, started = await WorkQueue(db, "w1", 30).claim(10)
    assert len(claims) == 5 and started == [job_id]
    assert {c.attempts for c in claims} == {1}
    assert (await store.get_job(P, job_id)).state is JobState.PROCESSING
    assert (await WorkQueue(db, "w2", 30).claim(10))[0] == []  # all leased
    assert await recorder(db, "w2").write([ok(claims[0])]) == (0, [], [])  # not its lease
    assert (await recorder(db, "w1").write([ok(claims[0])]))[0] == 1
    assert (await recorder(db, "w1").write([ok(claims[0])]))[0] == 0  # a second time: nothing
    found = await store.results_after(job_id, 0)
    assert [(r.sequence, r.request_id, r.state) for r in found] == \
        [(1, claims[0].request_id, RequestState.SUCCEEDED)]
    assert (found[0].metadata, found[0].cost_usd, found[0].attempts) == ('{"m":1}', 0.5, 1)
    job = await store.get_job(P, job_id)
    assert (job.metrics.succeeded, job.metrics.input_tokens, job.metrics.output_tokens,
            job.metrics.cost_usd, job.last_sequence) == (1, 3, 4, 0.5, 1)


async def test_the_unique_result_constraint_is_the_last_line_of_defence(
        db: Database, store: BatchStore) -> None:
    job_id = await submitted_job(store, 1)
    claims, _ = await WorkQueue(db, "w1", 30).claim(1)
    await recorder(db, "w1").write([ok(claims[0])])
    with pytest.raises(sa.exc.IntegrityError):
        async with db.write() as conn:
            await conn.execute(batch_results.insert().values(
                job_id=job_id, sequence=99, request_id=claims[0].request_id, state="succeeded",
                prompt_tokens=0, completion_tokens=0, attempts=1, complete_time=time.time()))


async def test_an_expired_lease_is_reclaimed_and_its_old_holder_cannot_record(
        db: Database, store: BatchStore) -> None:
    job_id = await submitted_job(store, 3)
    old, _ = await WorkQueue(db, "dead", 0.2).claim(10)
    await asyncio.sleep(0.3)
    new, _ = await WorkQueue(db, "alive", 30).claim(10)
    assert sorted(c.pk for c in new) == sorted(c.pk for c in old)
    assert {c.attempts for c in new} == {2}
    assert (await recorder(db, "dead").write([ok(c) for c in old]))[0] == 0
    recorded, jobs, ended = await recorder(db, "alive").write([ok(c) for c in new])
    assert (recorded, jobs, ended) == (3, [job_id], [job_id])
    assert (await store.get_job(P, job_id)).state is JobState.SUCCEEDED


async def test_heartbeats_keep_leases_and_report_lost_ones(db: Database, store: BatchStore
                                                           ) -> None:
    job_id = await submitted_job(store, 4)
    queue = WorkQueue(db, "w1", 0.3)
    claims, _ = await queue.claim(10)
    pks = {c.pk for c in claims}
    for _ in range(3):
        await asyncio.sleep(0.15)
        assert await queue.heartbeat(pks) == pks
    assert (await WorkQueue(db, "w2", 30).claim(10))[0] == []  # still held
    assert await queue.heartbeat(set()) == set()
    await store.cancel(P, job_id)
    assert await queue.heartbeat(pks) == set()  # cancelled: every lease is gone
    assert (await recorder(db, "w1").write([ok(c) for c in claims]))[0] == 0


async def test_a_retry_waits_for_its_time_and_counts_attempts(db: Database, store: BatchStore
                                                              ) -> None:
    job_id = await submitted_job(store, 1)
    queue = WorkQueue(db, "w1", 30)
    (claim,), _ = await queue.claim(1)
    error = ErrorDetail("RESOURCE_EXHAUSTED", "PROVIDER_RATE_LIMITED", "slow down", True)
    await recorder(db, "w1").write([Outcome(claim, RETRY, error=error,
                                            retry_at=time.time() + 0.4)])
    status = await store.get_request(P, job_id, claim.request_id)
    assert (status.state, status.attempts, status.last_error) == \
        (RequestState.PENDING, 1, error)
    assert (await queue.claim(1))[0] == []  # not due yet
    due = await queue.next_due()
    assert due is not None and due > time.time()
    await asyncio.sleep(0.45)
    (again,), _ = await queue.claim(1)
    assert again.attempts == 2
    await recorder(db, "w1").write([failed(again)])
    job = await store.get_job(P, job_id)
    assert job.state is JobState.FAILED and job.metrics.failed == 1  # every request failed
    status = await store.get_request(P, job_id, claim.request_id)
    assert status.result is not None and status.result.error == failed(again).error
    assert status.last_error == failed(again).error


async def test_release_gives_leases_back_without_counting_the_attempt(
        db: Database, store: BatchStore) -> None:
    await submitted_job(store, 3)
    queue = WorkQueue(db, "w1", 30)
    claims, _ = await queue.claim(2)
    assert await queue.release([claims[0].pk]) == 1
    assert await queue.release([]) == 0
    assert await queue.release(None) == 1  # every other lease of this worker id
    again, _ = await WorkQueue(db, "w2", 30).claim(10)
    assert len(again) == 3 and {c.attempts for c in again} == {1}


async def test_concurrent_claims_never_share_a_request(db: Database, store: BatchStore) -> None:
    await submitted_job(store, 120)
    queues = [WorkQueue(db, f"w{i}", 30) for i in range(4)]
    batches = await asyncio.gather(*(q.claim(40) for q in queues for _ in range(2)))
    pks = [c.pk for claims, _ in batches for c in claims]
    assert len(pks) == len(set(pks)) == 120


async def test_sequences_stay_gap_free_under_concurrent_recorders(
        db: Database, store: BatchStore) -> None:
    job_id = await submitted_job(store, 200)
    workers = [(WorkQueue(db, f"w{i}", 30), recorder(db, f"w{i}")) for i in range(4)]
    claimed = [(await q.claim(50))[0] for q, _ in workers]

    async def record(rec: ResultRecorder, claims: list[Claim]) -> None:
        for start in range(0, len(claims), 7):
            await rec.write([ok(c) if c.pk % 5 else failed(c) for c in claims[start:start + 7]])

    await asyncio.gather(*(record(rec, claims)
                           for (_, rec), claims in zip(workers, claimed, strict=True)))
    found = await store.results_after(job_id, 0, limit=500)
    assert [r.sequence for r in found] == list(range(1, 201))
    assert len({r.request_id for r in found}) == 200
    job = await store.get_job(P, job_id)
    assert job.state is JobState.SUCCEEDED
    assert job.metrics.succeeded + job.metrics.failed == 200 == job.metrics.processed
    assert job.metrics.failed == sum(1 for claims in claimed for c in claims if c.pk % 5 == 0)


# --- cancellation ----------------------------------------------------------------------------

async def test_cancel_numbers_the_rest_after_the_existing_results(
        db: Database, store: BatchStore) -> None:
    job_id = await submitted_job(store, 5)
    claims, _ = await WorkQueue(db, "w1", 30).claim(3)
    await recorder(db, "w1").write([ok(claims[0]), failed(claims[1])])
    job = await store.cancel(P, job_id)
    assert job.state is JobState.CANCELLED
    assert (job.metrics.succeeded, job.metrics.failed, job.metrics.cancelled) == (1, 1, 3)
    found = await store.results_after(job_id, 0)
    assert [r.sequence for r in found] == [1, 2, 3, 4, 5]
    assert [r.state for r in found[2:]] == [RequestState.CANCELLED] * 3
    assert {r.request_id for r in found} == {f"r{i}" for i in range(5)}
    assert all(r.metadata and r.metadata.startswith('{"i":') for r in found[2:])
    # the third claim was in flight: its result can no longer be recorded
    assert (await recorder(db, "w1").write([ok(claims[2])]))[0] == 0
    with pytest.raises(FailedPrecondition) as exc:
        await store.cancel(P, job_id)
    assert exc.value.reason == "JOB_ALREADY_ENDED"
    assert [e.state for e in await store.state_events(job_id)][-1] is JobState.CANCELLED


# --- jobs and requests -----------------------------------------------------------------------

async def test_add_requests_is_all_or_nothing_and_only_before_submit(store: BatchStore) -> None:
    job, created = await store.create_job(P, JobConfig(model="rowforge/chat"))
    assert created and job.state is JobState.CREATED
    total, pks = await store.add_requests(P, job.id, requests(3))
    assert total == 3 and len(pks) == 3
    with pytest.raises(AlreadyExists) as exc:
        await store.add_requests(P, job.id, [*requests(2, "new"), requests(3)[1]])
    assert exc.value.metadata == {"requestId": "r1"}
    assert (await store.get_job(P, job.id)).metrics.total_requests == 3
    with pytest.raises(NotFound):
        await store.get_request(P, job.id, "new0")
    with pytest.raises(NotFound):
        await store.add_requests("another", job.id, requests(1, "x"))
    await store.submit(P, job.id)
    with pytest.raises(FailedPrecondition) as exc2:
        await store.add_requests(P, job.id, requests(1, "late"))
    assert exc2.value.reason == "JOB_NOT_OPEN"


async def test_removed_requests_leave_an_empty_job_created(store: BatchStore) -> None:
    job, _ = await store.create_job(P, JobConfig(model="rowforge/chat"))
    _, pks = await store.add_requests(P, job.id, requests(4))
    assert await store.remove_requests(P, job.id, pks)
    after = await store.get_job(P, job.id)
    assert after.state is JobState.CREATED and after.metrics.total_requests == 0
    assert [e.state for e in await store.state_events(job.id)] == [JobState.CREATED]
    with pytest.raises(FailedPrecondition) as exc:
        await store.submit(P, job.id)
    assert exc.value.reason == "JOB_EMPTY"


async def test_idempotent_create_under_concurrency(store: BatchStore) -> None:
    config = JobConfig(model="rowforge/chat", job_type="t", metadata={"a": 1})
    made = await asyncio.gather(*(store.create_job(P, config, "key-1") for _ in range(6)))
    assert len({job.id for job, _ in made}) == 1
    assert sum(created for _, created in made) == 1
    with pytest.raises(InvalidArgument) as exc:
        await store.create_job(P, JobConfig(model="rowforge/chat", job_type="other"), "key-1")
    assert exc.value.reason == "IDEMPOTENCY_KEY_REUSED"
    other, created = await store.create_job("elsewhere", config, "key-1")
    assert created and other.id != made[0][0].id


# --- retention -------------------------------------------------------------------------------

async def test_expired_results_are_purged_and_the_job_stays(db: Database) -> None:
    store = BatchStore(db, retention_s=60)
    job_id = await submitted_job(store, 30)
    claims, _ = await WorkQueue(db, "w1", 30).claim(30)
    await ResultRecorder(db, "w1", retention_s=60).write([ok(c) for c in claims])
    kept = await submitted_job(store, 2)  # not ended: never purged
    assert await store.purge_expired() == 0  # not expired yet
    later = time.time() + 61  # the clock passed in, not slept: no race with a slow machine
    assert await store.purge_expired(chunk=7, now=later) == 1
    job = await store.get_job(P, job_id)
    assert job.purged and job.metrics.succeeded == 30 and job.state is JobState.SUCCEEDED
    async with db.read() as conn:
        for table in (batch_results, batch_requests, batch_payloads):
            assert await conn.scalar(sa.select(sa.func.count()).select_from(table).where(
                table.c.job_id == job_id)) == 0
        assert await conn.scalar(sa.select(sa.func.count()).select_from(batch_requests).where(
            batch_requests.c.job_id == kept)) == 2
    with pytest.raises(NotFound) as exc:
        await store.get_request(P, job_id, "r0")
    assert exc.value.reason == "RESULTS_EXPIRED"
    with pytest.raises(FailedPrecondition) as exc2:
        async for _ in stream_results(store, JobSignals(), P, job_id, 0):
            pass
    assert exc2.value.reason == "RESULTS_EXPIRED"
    assert await store.purge_expired(now=later) == 0  # nothing left to do


async def test_one_unrecordable_outcome_does_not_lose_the_others(db: Database,
                                                                 store: BatchStore) -> None:
    job_id = await submitted_job(store, 3)
    claims, _ = await WorkQueue(db, "w1", 30).claim(3)
    async with db.write() as conn:  # a stray result the guard cannot know about
        await conn.execute(batch_results.insert().values(
            job_id=job_id, sequence=1000, request_id=claims[0].request_id, state="succeeded",
            prompt_tokens=0, completion_tokens=0, attempts=1, complete_time=time.time()))
    flushed: list[object] = []
    rec = ResultRecorder(db, "w1", retention_s=3600, on_flushed=flushed.append,
                         max_delay=0.01)
    rec.start()
    for claim in claims:
        rec.put(ok(claim))
    await asyncio.wait_for(rec.drain(), 10)
    await rec.stop()
    assert len(flushed) == 1 and flushed[0].recorded == 2  # type: ignore[attr-defined]
    found = await store.results_after(job_id, 0)
    assert {r.request_id for r in found if r.sequence < 1000} == \
        {c.request_id for c in claims[1:]}


async def test_cancel_racing_claims_heartbeats_and_records_stays_consistent(
        db: Database, store: BatchStore) -> None:
    """Every writer at once on one job (row-lock order matters on PostgreSQL): no deadlock,
    and still exactly one result per request, numbered without gaps."""
    n = 240
    job_id = await submitted_job(store, n)
    workers = [(WorkQueue(db, f"w{i}", 30), recorder(db, f"w{i}")) for i in range(3)]
    cancelled = asyncio.Event()

    async def work(queue: WorkQueue, rec: ResultRecorder) -> None:
        while not cancelled.is_set():
            claims, _ = await queue.claim(8)
            if not claims:
                return
            await queue.heartbeat({c.pk for c in claims})
            await rec.write([ok(c) if c.pk % 3 else failed(c) for c in claims[:6]])
            await queue.release([c.pk for c in claims[6:]])

    async def cancel_midway() -> None:
        async def some_done() -> bool:
            return (await store.get_job(P, job_id)).metrics.processed >= n // 3
        while not await some_done():  # noqa: ASYNC110 - polling the database
            await asyncio.sleep(0.005)
        await store.cancel(P, job_id)
        cancelled.set()

    await asyncio.wait_for(asyncio.gather(cancel_midway(), *(work(q, r) for q, r in workers)),
                           60)
    found = await store.results_after(job_id, 0, limit=1000)
    assert [r.sequence for r in found] == list(range(1, n + 1))
    assert len({r.request_id for r in found}) == n
    job = await store.get_job(P, job_id)
    assert job.state is JobState.CANCELLED and job.metrics.processed == n
    assert 0 < job.metrics.cancelled < n
