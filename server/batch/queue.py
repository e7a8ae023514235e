"""The work queue over ``rf_batch_requests``: claim due requests with a lease, heartbeat the
leases, give them back.

A request is claimable when ``due_time <= now``: a pending request whose (next) attempt is
due, or a running request whose lease expired (its worker died). PostgreSQL claims with
``FOR UPDATE SKIP LOCKED`` so replicas never wait for or take each other's rows; SQLite has a
single writer (``db.write()``), where ``UPDATE ... RETURNING`` claims atomically.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from rowforge.server.batch.model import JobConfig, JobState, RequestInput, RequestState
from rowforge.server.batch.store import JOB, PAY, REQ, add_state_event
from rowforge.server.batch.table_rows import is_table_job
from rowforge.server.storage.batch_tables import batch_jobs, batch_payloads, batch_requests
from rowforge.server.storage.db import Database


@dataclass(frozen=True)
class Claim:
    """A request this worker holds a lease on (``attempts`` counts this attempt)."""

    pk: int
    job_id: str
    request_id: str
    attempts: int


@dataclass(frozen=True)
class JobInfo:
    """What a worker needs of a job to call its model."""

    project_id: str
    config: JobConfig


@dataclass(frozen=True)
class Payload:
    """A claimed request's input, plus its metadata JSON for the result."""

    request: RequestInput
    metadata_json: str | None


class WorkQueue:
    """Claims and leases of one worker.

    Args:
        db: The database.
        worker_id: This replica's lease owner name.
        lease_s: How long a claim holds without a heartbeat.
    """

    def __init__(self, db: Database, worker_id: str, lease_s: float) -> None:
        self.db = db
        self.worker_id = worker_id
        self.lease_s = lease_s

    async def claim(self, limit: int) -> tuple[list[Claim], list[str]]:
        """Lease up to ``limit`` due requests (oldest due first).

        Returns the claims and the ids of jobs that moved from READY to PROCESSING.
        """
        now = time.time()
        due = sa.select(REQ.id).where(REQ.due_time <= now).order_by(REQ.due_time).limit(limit)
        values = {"state": RequestState.RUNNING.value, "lease_owner": self.worker_id,
                  "due_time": now + self.lease_s, "attempts": REQ.attempts + 1}
        returning = (REQ.id, REQ.job_id, REQ.request_id, REQ.attempts)
        if self.db.is_postgres:
            picked = due.with_for_update(skip_locked=True).cte("picked")
            statement = batch_requests.update().where(REQ.id == picked.c.id)
        else:
            statement = batch_requests.update().where(REQ.id.in_(due.scalar_subquery()))
        async with self.db.write() as conn:
            rows = (await conn.execute(statement.values(**values).returning(*returning))).all()
            started: list[str] = []
            job_ids = sorted({row.job_id for row in rows})
            if job_ids:
                ready = sa.select(JOB.id).where(JOB.id.in_(job_ids),
                                                JOB.state == JobState.READY.value)
                if self.db.is_postgres:
                    # a READY job's row is locked only by a CancelJob (which then waits for
                    # our request rows) or by another claim doing this very update: never
                    # wait for it
                    ready = ready.with_for_update(skip_locked=True)
                started = list((await conn.execute(
                    batch_jobs.update().where(JOB.id.in_(ready.scalar_subquery()))
                    .values(state=JobState.PROCESSING.value, start_time=now)
                    .returning(JOB.id))).scalars())
                for job_id in started:
                    await add_state_event(conn, job_id, JobState.PROCESSING, 0, now)
        claims = [Claim(int(r.id), r.job_id, r.request_id, int(r.attempts)) for r in rows]
        return claims, started

    async def payloads(self, pks: Sequence[int], *, max_size: int | None = None
                       ) -> dict[int, Payload | None]:
        """The inputs of claimed requests; a payload larger than ``max_size`` characters maps
        to None (load it with :meth:`payload` when it is about to be used)."""
        if not pks:
            return {}
        body: Any = PAY.body
        metadata: Any = PAY.metadata
        if max_size is not None:
            body = sa.case((PAY.size <= max_size, PAY.body), else_=sa.null()).label("body")
            metadata = sa.case((PAY.size <= max_size, PAY.metadata), else_=sa.null()
                               ).label("metadata")
        async with self.db.read() as conn:
            rows = (await conn.execute(
                sa.select(PAY.request_pk, REQ.request_id, body, metadata)
                .select_from(batch_payloads.join(batch_requests, REQ.id == PAY.request_pk))
                .where(PAY.request_pk.in_(list(pks))))).all()
        return {int(row.request_pk): _payload(row) if row.body is not None else None
                for row in rows}

    async def payload(self, pk: int) -> Payload | None:
        """One request's input (None if it is gone)."""
        async with self.db.read() as conn:
            row = (await conn.execute(
                sa.select(PAY.request_pk, REQ.request_id, PAY.body, PAY.metadata)
                .select_from(batch_payloads.join(batch_requests, REQ.id == PAY.request_pk))
                .where(PAY.request_pk == pk))).first()
        return _payload(row) if row is not None else None

    async def jobs(self, job_ids: Iterable[str]) -> dict[str, JobInfo]:
        """Project and configuration of jobs."""
        ids = list(job_ids)
        if not ids:
            return {}
        async with self.db.read() as conn:
            rows = (await conn.execute(sa.select(
                JOB.id, JOB.project_id, JOB.model, JOB.temperature, JOB.max_output_tokens,
                JOB.system_instruction, JOB.job_type, JOB.max_batch_size, JOB.metadata,
            ).where(JOB.id.in_(ids)))).all()
        return {row.id: JobInfo(row.project_id, JobConfig(
            model=row.model, temperature=float(row.temperature),
            max_output_tokens=int(row.max_output_tokens),
            system_instruction=row.system_instruction or "", job_type=row.job_type or "",
            max_batch_size=int(row.max_batch_size),
            # only table jobs need theirs (their parameters); batch requests never read it
            metadata=row.metadata if is_table_job(row.job_type or "") else None,
        )) for row in rows}

    async def heartbeat(self, pks: Iterable[int]) -> set[int]:
        """Extend this worker's leases on ``pks``; returns those still held (a request missing
        here was cancelled, or its lease expired and another worker took it)."""
        ids = list(pks)
        if not ids:
            return set()
        now = time.time()
        async with self.db.write() as conn:
            # An expired lease nobody took yet is still ours: extending it is safe (a worker
            # that took it would have put its own name in lease_owner).
            rows = await conn.execute(batch_requests.update().where(
                REQ.id.in_(self._mine(ids).scalar_subquery()),
            ).values(due_time=now + self.lease_s).returning(REQ.id))
            return {int(pk) for pk in rows.scalars()}

    def _mine(self, ids: list[int] | None) -> Any:
        """This worker's running requests (of ``ids``). On PostgreSQL rows another transaction
        holds are skipped: whoever holds them (a CancelJob, a claim of an expired lease) is
        taking them from us, and waiting could deadlock with it."""
        query = sa.select(REQ.id).where(REQ.lease_owner == self.worker_id,
                                      REQ.state == RequestState.RUNNING.value)
        if ids is not None:
            query = query.where(REQ.id.in_(ids))
        if self.db.is_postgres:
            query = query.with_for_update(skip_locked=True)
        return query

    async def release(self, pks: Sequence[int] | None = None) -> int:
        """Give leases back, due now, without counting the interrupted attempt (shutdown).

        ``pks=None`` releases every lease of this worker id (at start: a previous process
        with the same id died holding them).
        """
        if pks is not None and not pks:
            return 0
        mine = self._mine(list(pks) if pks is not None else None)
        async with self.db.write() as conn:
            result = await conn.execute(batch_requests.update().where(
                REQ.id.in_(mine.scalar_subquery())).values(
                state=RequestState.PENDING.value, lease_owner=None, due_time=time.time(),
                attempts=sa.case((REQ.attempts > 0, REQ.attempts - 1), else_=0)))
            return int(result.rowcount or 0)

    async def next_due(self) -> float | None:
        """The earliest ``due_time`` of any live request (when to look again), or None."""
        async with self.db.read() as conn:
            return await conn.scalar(sa.select(REQ.due_time).where(REQ.due_time.is_not(None))
                                     .order_by(REQ.due_time).limit(1))


def _payload(row: Any) -> Payload:
    body = json.loads(row.body)
    body["metadata"] = None  # never sent to the model; the result copies the JSON text
    return Payload(RequestInput.from_body(row.request_id, body), row.metadata)
