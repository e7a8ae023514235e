"""Jobs queued in the background (BatchStore.queue_requests), on SQLite and PostgreSQL: the
cursor moves with each chunk in one transaction, a stale cursor or a cancelled job is
refused, queued requests of a running job are due at once, and a job does not end while
rows are left to queue."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from rowforge.server.batch.model import JobConfig, JobState, RequestInput
from rowforge.server.batch.queue import WorkQueue
from rowforge.server.batch.recorder import SUCCEEDED, Outcome, ResultRecorder
from rowforge.server.batch.store import BatchStore
from rowforge.server.errors import NotFound
from rowforge.server.storage.db import Database

P = "proj"
PREFIX = "rowforge.table/"


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


def rows(start: int, stop: int) -> list[RequestInput]:
    return [RequestInput(f"row{i}", ()) for i in range(start, stop)]


async def new_job(store: BatchStore) -> str:
    job, _ = await store.create_job(P, JobConfig(model="rowforge/chat",
                                                 job_type=f"{PREFIX}action/t"))
    return job.id


async def finish_all(db: Database, n: int) -> list[str]:
    """Claim and record as succeeded every due request; returns the jobs that ended."""
    claims, _ = await WorkQueue(db, "w1", 30).claim(n)
    recorder = ResultRecorder(db, "w1", retention_s=3600)
    _, _, ended = await recorder.write([Outcome(c, SUCCEEDED) for c in claims])
    return ended


async def test_chunks_move_the_cursor_and_a_stale_one_is_refused(store: BatchStore,
                                                                 db: Database) -> None:
    job_id = await new_job(store)
    assert await store.queue_requests(P, job_id, rows(0, 3), after=None, cursor="c1")
    # the first chunk again (a retried CreateTableJob, a second queuer): refused
    assert not await store.queue_requests(P, job_id, rows(0, 3), after=None, cursor="c1")
    job, _ = await store.submit(P, job_id)
    assert job.queuing and job.metrics.total_requests == 3
    assert await store.queue_requests(P, job_id, rows(3, 5), after="c1", cursor="c2")
    # a queuer that read the cursor before it moved: refused, nothing queued twice
    assert not await store.queue_requests(P, job_id, rows(3, 5), after="c1", cursor="c2")
    assert [j.id for j, c in await store.queuing_jobs(PREFIX)] == [job_id]
    assert (await store.queuing_jobs(PREFIX))[0][1] == "c2"
    # requests queued into a submitted job are due at once
    claims, _ = await WorkQueue(db, "w1", 30).claim(10)
    assert sorted(c.request_id for c in claims) == [f"row{i}" for i in range(5)]
    with pytest.raises(NotFound):
        await store.queue_requests("other", job_id, rows(5, 6), after="c2", cursor=None)


async def test_a_job_does_not_end_while_rows_are_left_to_queue(store: BatchStore,
                                                               db: Database) -> None:
    job_id = await new_job(store)
    await store.queue_requests(P, job_id, rows(0, 4), after=None, cursor="c1")
    await store.submit(P, job_id)
    assert await finish_all(db, 10) == []  # every queued request ended, more to come
    assert (await store.get_job(P, job_id)).state is JobState.PROCESSING
    await store.queue_requests(P, job_id, rows(4, 6), after="c1", cursor="c2")
    assert await finish_all(db, 10) == []
    # the last chunk: nothing left, and when it is empty the job ends right there
    assert await store.queue_requests(P, job_id, [], after="c2", cursor=None)
    job = await store.get_job(P, job_id)
    assert job.state is JobState.SUCCEEDED and not job.queuing
    assert job.metrics.total_requests == job.metrics.succeeded == 6
    assert await store.queuing_jobs(PREFIX) == []


async def test_the_last_chunk_lets_the_job_end_with_its_last_result(store: BatchStore,
                                                                    db: Database) -> None:
    job_id = await new_job(store)
    await store.queue_requests(P, job_id, rows(0, 2), after=None, cursor="c1")
    await store.submit(P, job_id)
    await store.queue_requests(P, job_id, rows(2, 4), after="c1", cursor=None)
    assert await finish_all(db, 10) == [job_id]
    assert (await store.get_job(P, job_id)).metrics.succeeded == 4


async def test_cancel_stops_the_queuing(store: BatchStore, db: Database) -> None:
    job_id = await new_job(store)
    await store.queue_requests(P, job_id, rows(0, 3), after=None, cursor="c1")
    await store.submit(P, job_id)
    job = await store.cancel(P, job_id)
    assert job.state is JobState.CANCELLED and not job.queuing
    assert not await store.queue_requests(P, job_id, rows(3, 6), after="c1", cursor=None)
    job = await store.get_job(P, job_id)
    assert job.metrics.total_requests == 3 and job.metrics.cancelled == 3
    assert await store.queuing_jobs(PREFIX) == []
