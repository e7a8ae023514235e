"""Jobs, requests and results in the database: everything the RPCs read and write.

The work queue (claims, leases) lives in :mod:`.queue`, result recording in :mod:`.recorder`.
Every method takes the calling project: another project's job is NOT_FOUND.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from rowforge.server.batch.model import (
    ErrorDetail,
    Job,
    JobConfig,
    JobMetrics,
    JobPage,
    JobState,
    RequestInput,
    RequestState,
    RequestStatus,
    Result,
    StateEvent,
)
from rowforge.server.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Violations,
)
from rowforge.server.storage.batch_tables import (
    batch_call_counts,
    batch_events,
    batch_file_refs,
    batch_jobs,
    batch_payloads,
    batch_requests,
    batch_results,
)
from rowforge.server.storage.db import Database

MAX_LIST_LIMIT = 100
DAY_S = 86_400.0

CALLS = batch_call_counts.c
JOB = batch_jobs.c
REQ = batch_requests.c
PAY = batch_payloads.c
RES = batch_results.c
EVT = batch_events.c
REFS = batch_file_refs.c

RESULT_COLUMNS = (RES.sequence, RES.request_id, RES.state, RES.response_text, RES.response_json,
                  RES.prompt_tokens, RES.completion_tokens, RES.cost_usd, RES.error, RES.metadata,
                  RES.attempts, RES.complete_time)


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def config_hash(config: JobConfig) -> str:
    """What an idempotency key is bound to: every CreateJob parameter."""
    canonical = json.dumps({
        "model": config.model, "temperature": round(config.temperature, 6),
        "max_output_tokens": config.max_output_tokens,
        "system_instruction": config.system_instruction, "job_type": config.job_type,
        "metadata": config.metadata, "max_batch_size": config.max_batch_size,
    }, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def job_select() -> Any:
    """SELECT of a job's row plus its provider call count (``provider_calls``)."""
    calls = sa.select(sa.func.coalesce(sa.func.max(CALLS.calls), 0)).where(
        CALLS.job_id == JOB.id).scalar_subquery()
    return sa.select(batch_jobs, calls.label("provider_calls"))


def job_from_row(row: Any, now: float | None = None) -> Job:
    start, end = row.start_time, row.end_time
    duration = ((end if end is not None else (now or time.time())) - start) if start else 0.0
    metrics = JobMetrics(
        total_requests=int(row.total_requests), succeeded=int(row.succeeded),
        failed=int(row.failed), cancelled=int(row.cancelled),
        input_tokens=int(row.input_tokens), output_tokens=int(row.output_tokens),
        cost_usd=float(row.cost_usd or 0.0), duration_seconds=max(duration, 0.0),
        provider_calls=int(getattr(row, "provider_calls", 0) or 0))
    config = JobConfig(model=row.model, temperature=float(row.temperature),
                       max_output_tokens=int(row.max_output_tokens),
                       system_instruction=row.system_instruction or "",
                       job_type=row.job_type or "", metadata=row.metadata,
                       max_batch_size=int(row.max_batch_size))
    return Job(id=row.id, project_id=row.project_id, state=JobState(row.state), config=config,
               metrics=metrics, create_time=row.create_time, submit_time=row.submit_time,
               start_time=start, end_time=end, expire_time=row.expire_time,
               purged=bool(row.purged), last_sequence=int(row.last_sequence),
               queuing=getattr(row, "queue_cursor", None) is not None)


def result_from_row(row: Any) -> Result:
    return Result(sequence=int(row.sequence), request_id=row.request_id,
                  state=RequestState(row.state), response_text=row.response_text or "",
                  response_json=row.response_json, prompt_tokens=int(row.prompt_tokens),
                  completion_tokens=int(row.completion_tokens), cost_usd=row.cost_usd,
                  error=ErrorDetail.from_json(row.error), metadata=row.metadata,
                  attempts=int(row.attempts), complete_time=row.complete_time)


def job_not_found(job_id: str) -> NotFound:
    return NotFound(f"batch job {job_id!r} not found", reason="JOB_NOT_FOUND",
                    metadata={"jobId": job_id}, resource_type="batch_job",
                    resource_name=job_id)


async def add_state_event(conn: AsyncConnection, job_id: str, state: JobState,
                          after_sequence: int, now: float) -> None:
    await conn.execute(batch_events.insert().values(
        job_id=job_id, after_sequence=after_sequence, state=state.value, time=now))


#: States in which a job's requests are being processed (it may end).
RUNNING_STATES = (JobState.PROCESSING.value, JobState.READY.value)


async def end_if_done(conn: AsyncConnection, job_id: str, job: Any, now: float,
                      retention_s: float) -> bool:
    """End a running job whose every request ended and that queues no more (``job``: its
    row after the last change, with ``total_requests``, the counters, ``state``,
    ``last_sequence`` and ``queue_cursor``); returns whether it ended."""
    done = int(job.succeeded) + int(job.failed) + int(job.cancelled)
    if done < int(job.total_requests) or job.state not in RUNNING_STATES \
            or job.queue_cursor is not None:
        return False
    state = JobState.SUCCEEDED if (int(job.succeeded) > 0 or int(job.failed) == 0) \
        else JobState.FAILED
    await conn.execute(batch_jobs.update().where(
        JOB.id == job_id, JOB.state.in_(RUNNING_STATES)).values(
        state=state.value, end_time=now, expire_time=now + retention_s))
    await add_state_event(conn, job_id, state, int(job.last_sequence), now)
    return True


class BatchStore:
    """Jobs and their requests, results and events.

    Args:
        db: The database.
        retention_s: How long results are kept after a job ends.
    """

    def __init__(self, db: Database, *, retention_s: float = 30 * DAY_S) -> None:
        self.db = db
        self.retention_s = retention_s

    # --- jobs ----------------------------------------------------------------------------

    async def create_job(self, project_id: str, config: JobConfig,
                         idempotency_key: str = "") -> tuple[Job, bool]:
        """Create a job; returns ``(job, created)``.

        With an ``idempotency_key`` already used in the project, returns that job
        (``created`` False) when the parameters match.

        Raises:
            InvalidArgument: ``IDEMPOTENCY_KEY_REUSED`` when they differ.
        """
        digest = config_hash(config)
        key = idempotency_key or None
        for _ in range(2):  # a concurrent create with the same key: read what it made
            if key is not None:
                async with self.db.read() as conn:
                    row = (await conn.execute(job_select().where(
                        JOB.project_id == project_id, JOB.idempotency_key == key))).first()
                if row is not None:
                    if row.request_hash != digest:
                        raise InvalidArgument.field(
                            "idempotency_key", "was already used to create a job with other "
                            "parameters", reason="IDEMPOTENCY_KEY_REUSED",
                            metadata={"jobId": row.id})
                    return job_from_row(row), False
            now = time.time()
            job_id = f"job_{uuid.uuid4().hex}"
            try:
                async with self.db.write() as conn:
                    await conn.execute(batch_jobs.insert().values(
                        id=job_id, project_id=project_id, state=JobState.CREATED.value,
                        model=config.model, temperature=config.temperature,
                        max_output_tokens=config.max_output_tokens,
                        system_instruction=config.system_instruction, job_type=config.job_type,
                        metadata=config.metadata, max_batch_size=config.max_batch_size,
                        idempotency_key=key, request_hash=digest if key else None,
                        total_requests=0, succeeded=0, failed=0, cancelled=0, input_tokens=0,
                        output_tokens=0, cost_usd=0.0, last_sequence=0, create_time=now,
                        purged=False))
                    await add_state_event(conn, job_id, JobState.CREATED, 0, now)
            except IntegrityError:
                if key is None:
                    raise
                continue
            return await self.get_job(project_id, job_id), True
        raise AlreadyExists("a job with this idempotency key is being created; retry",
                            reason="IDEMPOTENCY_KEY_RACE")  # pragma: no cover - needs a race

    async def get_job(self, project_id: str, job_id: str) -> Job:
        """Raises ``NotFound`` for an unknown job or another project's."""
        async with self.db.read() as conn:
            row = (await conn.execute(job_select().where(
                JOB.id == job_id, JOB.project_id == project_id))).first()
        if row is None:
            raise job_not_found(job_id)
        return job_from_row(row)

    async def _locked_job(self, conn: AsyncConnection, project_id: str, job_id: str) -> Any:
        query = sa.select(batch_jobs).where(JOB.id == job_id, JOB.project_id == project_id)
        if self.db.is_postgres:
            query = query.with_for_update()
        row = (await conn.execute(query)).first()
        if row is None:
            raise job_not_found(job_id)
        return row

    async def list_jobs(self, project_id: str, *, offset: int = 0, limit: int = 0,
                        page_token: str = "", state: JobState | None = None,
                        job_type: str = "") -> JobPage:
        """The project's jobs, newest first, optionally of one state and/or job type.

        Raises:
            InvalidArgument: bad ``offset``/``limit``, or a token of another listing.
        """
        v = Violations()
        v.check(offset >= 0, "offset", "must not be negative")
        v.check(0 <= limit <= MAX_LIST_LIMIT, "limit",
                f"must be between 1 and {MAX_LIST_LIMIT} (0: {MAX_LIST_LIMIT})")
        v.raise_if_any()
        limit = limit or MAX_LIST_LIMIT
        where = [JOB.project_id == project_id]
        if state is not None:
            where.append(JOB.state == state.value)
        if job_type:
            where.append(JOB.job_type == job_type)
        tag = _listing_tag(project_id, state, job_type)
        query = job_select().where(*where)
        if page_token:
            after_time, after_id = _decode_token(page_token, tag)
            query = query.where(sa.or_(JOB.create_time < after_time,
                                       sa.and_(JOB.create_time == after_time, JOB.id < after_id)))
        elif offset:
            query = query.offset(offset)
        query = query.order_by(JOB.create_time.desc(), JOB.id.desc()).limit(limit + 1)
        async with self.db.read() as conn:
            rows = (await conn.execute(query)).all()
            total = await conn.scalar(sa.select(sa.func.count()).select_from(batch_jobs)
                                      .where(*where))
        now = time.time()
        items = [job_from_row(row, now) for row in rows[:limit]]
        token = _encode_token(items[-1], tag) if len(rows) > limit else ""
        return JobPage(items, token, int(total or 0))

    # --- requests ------------------------------------------------------------------------

    async def add_requests(self, project_id: str, job_id: str,
                           requests: Sequence[RequestInput]) -> tuple[int, list[int]]:
        """Add validated requests to a job that is not submitted; all or nothing.

        Returns the job's ``total_requests`` now and the row ids of the added requests
        (for :meth:`remove_requests`).

        Raises:
            NotFound: unknown job. FailedPrecondition: the job was submitted or cancelled.
            AlreadyExists: a request_id the job already has (``DUPLICATE_REQUEST_ID``).
        """
        now = time.time()
        async with self.db.write() as conn:
            job = await self._locked_job(conn, project_id, job_id)
            state = JobState(job.state)
            if state not in (JobState.CREATED, JobState.POPULATING):
                raise FailedPrecondition(
                    f"batch job {job_id!r} is {state.value}: requests can only be added "
                    "before it is submitted", reason="JOB_NOT_OPEN",
                    metadata={"jobId": job_id, "state": state.value},
                    resource_type="batch_job", resource_name=job_id)
            ids = [r.request_id for r in requests]
            taken = (await conn.execute(sa.select(REQ.request_id).where(
                REQ.job_id == job_id, REQ.request_id.in_(ids)).limit(1))).scalar()
            if taken is not None:
                raise _duplicate(taken)
            first = int(job.total_requests)
            try:
                inserted = (await conn.execute(
                    batch_requests.insert().returning(REQ.id, sort_by_parameter_order=True),
                    [{"job_id": job_id, "request_id": r.request_id, "position": first + i + 1,
                      "state": RequestState.PENDING.value, "attempts": 0}
                     for i, r in enumerate(requests)])).scalars().all()
            except IntegrityError:  # pragma: no cover - the job row lock prevents this race
                raise _duplicate(ids[0]) from None
            payloads = []
            for pk, r in zip(inserted, requests, strict=True):
                body = dumps(r.body())
                meta = dumps(r.metadata) if r.metadata is not None else None
                payloads.append({"request_pk": pk, "job_id": job_id, "body": body,
                                 "metadata": meta,
                                 "size": len(body) + (len(meta) if meta else 0)})
            await conn.execute(batch_payloads.insert(), payloads)
            refs = [{"request_pk": pk, "uri": uri, "job_id": job_id}
                    for pk, r in zip(inserted, requests, strict=True)
                    for uri in sorted({p.image_uri for p in r.parts
                                       if p.image_uri and p.image_uri.startswith("file://")})]
            if refs:
                await conn.execute(batch_file_refs.insert(), refs)
            total = first + len(requests)
            await conn.execute(batch_jobs.update().where(JOB.id == job_id).values(
                total_requests=total, state=JobState.POPULATING.value))
            if state is JobState.CREATED:
                await add_state_event(conn, job_id, JobState.POPULATING, 0, now)
        return total, list(inserted)

    async def remove_requests(self, project_id: str, job_id: str, pks: Sequence[int]) -> bool:
        """Take back requests added by a stream that then failed, while the job is still
        open; a job left empty is CREATED again. Returns whether they were removed."""
        async with self.db.write() as conn:
            job = await self._locked_job(conn, project_id, job_id)
            if JobState(job.state) not in (JobState.CREATED, JobState.POPULATING):
                return False
            removed = 0
            for start in range(0, len(pks), 1000):
                chunk = list(pks[start:start + 1000])
                await conn.execute(batch_payloads.delete().where(PAY.request_pk.in_(chunk)))
                await conn.execute(batch_file_refs.delete().where(REFS.request_pk.in_(chunk)))
                removed += (await conn.execute(batch_requests.delete().where(
                    REQ.job_id == job_id, REQ.id.in_(chunk)))).rowcount
            total = max(int(job.total_requests) - removed, 0)
            values: dict[str, Any] = {"total_requests": total}
            if total == 0:
                values["state"] = JobState.CREATED.value
                await conn.execute(batch_events.delete().where(
                    EVT.job_id == job_id, EVT.state == JobState.POPULATING.value))
            await conn.execute(batch_jobs.update().where(JOB.id == job_id).values(**values))
        return True

    async def queue_requests(self, project_id: str, job_id: str,
                             requests: Sequence[RequestInput], *, after: str | None,
                             cursor: str | None) -> bool:
        """Queue requests of a job filled in the background, moving its ``queue_cursor``
        from ``after`` to ``cursor`` (None: these are the last) in the same transaction, so
        a restart continues where the queuing stopped and never queues a request twice.

        The first chunk (``after`` None) is taken only by a CREATED job; the next ones by a
        job whose cursor still is ``after``, before or after it was submitted (submitted,
        the requests are due at once). Returns False, changing nothing, when the job was
        cancelled or ended, or its cursor moved (another queuer took over).

        Raises:
            NotFound: unknown job.
        """
        now = time.time()
        async with self.db.write() as conn:
            job = await self._locked_job(conn, project_id, job_id)
            state = JobState(job.state)
            if state.is_terminal or (job.queue_cursor is None) != (after is None) \
                    or (after is None and state is not JobState.CREATED) \
                    or (after is not None and job.queue_cursor != after):
                return False
            first = int(job.total_requests)
            due = now if state.value in RUNNING_STATES else None
            if requests:
                pks = (await conn.execute(
                    batch_requests.insert().returning(REQ.id, sort_by_parameter_order=True),
                    [{"job_id": job_id, "request_id": r.request_id, "position": first + i + 1,
                      "state": RequestState.PENDING.value, "attempts": 0, "due_time": due}
                     for i, r in enumerate(requests)])).scalars().all()
                await conn.execute(batch_payloads.insert(), [
                    {"request_pk": pk, "job_id": job_id, "body": body, "metadata": None,
                     "size": len(body)}
                    for pk, body in zip(pks, (dumps(r.body()) for r in requests),
                                        strict=True)])
            values: dict[str, Any] = {"total_requests": first + len(requests),
                                      "queue_cursor": cursor}
            if state is JobState.CREATED:
                values["state"] = JobState.POPULATING.value
                await add_state_event(conn, job_id, JobState.POPULATING, 0, now)
            row = (await conn.execute(batch_jobs.update().where(JOB.id == job_id)
                                      .values(**values).returning(*batch_jobs.c))).one()
            if cursor is None:
                await end_if_done(conn, job_id, row, now, self.retention_s)
        return True

    async def queuing_jobs(self, job_type_prefix: str) -> list[tuple[Job, str]]:
        """Jobs (of every project) whose requests are still being queued, with their
        cursors: what a restarted queuer continues."""
        async with self.db.read() as conn:
            rows = (await conn.execute(job_select().where(
                JOB.queue_cursor.is_not(None), JOB.job_type.startswith(job_type_prefix),
                JOB.state.not_in([s.value for s in JobState if s.is_terminal])))).all()
        return [(job_from_row(row), str(row.queue_cursor)) for row in rows]

    async def submit(self, project_id: str, job_id: str) -> tuple[Job, bool]:
        """Start processing a populated job; returns ``(job, submitted_now)``.

        Submitting a job that is already ready, processing or finished (but not cancelled)
        returns it unchanged, so a client may safely retry a SubmitJob.

        Raises:
            NotFound. FailedPrecondition: ``JOB_EMPTY`` (no requests) or ``JOB_CANCELLED``.
        """
        now = time.time()
        async with self.db.write() as conn:
            job = await self._locked_job(conn, project_id, job_id)
            state = JobState(job.state)
            if state is JobState.CREATED:
                raise FailedPrecondition(
                    f"batch job {job_id!r} has no requests: add some before submitting it",
                    reason="JOB_EMPTY", metadata={"jobId": job_id},
                    resource_type="batch_job", resource_name=job_id)
            if state is JobState.CANCELLED:
                raise FailedPrecondition(f"batch job {job_id!r} was cancelled",
                                         reason="JOB_CANCELLED", metadata={"jobId": job_id},
                                         resource_type="batch_job", resource_name=job_id)
            submitted = state is JobState.POPULATING
            if submitted:
                await conn.execute(batch_jobs.update().where(JOB.id == job_id).values(
                    state=JobState.READY.value, submit_time=now))
                await conn.execute(batch_requests.update().where(
                    REQ.job_id == job_id, REQ.state == RequestState.PENDING.value
                ).values(due_time=now))
                await add_state_event(conn, job_id, JobState.READY, 0, now)
        return await self.get_job(project_id, job_id), submitted

    async def cancel(self, project_id: str, job_id: str) -> Job:
        """Cancel a job: every request not ended gets a CANCELLED result (numbered after the
        existing ones), leases are dropped (so a worker still calling the model can no longer
        record anything), and the job becomes CANCELLED.

        Raises:
            NotFound. FailedPrecondition: ``JOB_ALREADY_ENDED`` for a terminal job.
        """
        now = time.time()
        async with self.db.write() as conn:
            job = await self._locked_job(conn, project_id, job_id)
            state = JobState(job.state)
            if state.is_terminal:
                raise FailedPrecondition(
                    f"batch job {job_id!r} already ended ({state.value})",
                    reason="JOB_ALREADY_ENDED", metadata={"jobId": job_id,
                                                          "state": state.value},
                    resource_type="batch_job", resource_name=job_id)
            count = (await conn.execute(batch_requests.update().where(
                REQ.job_id == job_id,
                REQ.state.in_((RequestState.PENDING.value, RequestState.RUNNING.value)),
            ).values(state=RequestState.CANCELLED.value, due_time=None,
                     lease_owner=None))).rowcount
            base = int(job.last_sequence)
            if count:
                numbered = sa.select(
                    REQ.job_id, (sa.literal(base) + sa.func.row_number().over(
                        order_by=REQ.position)).label("sequence"),
                    REQ.request_id, sa.literal(RequestState.CANCELLED.value), PAY.metadata,
                    REQ.attempts, sa.literal(now), sa.literal(0), sa.literal(0),
                ).select_from(batch_requests.join(batch_payloads, PAY.request_pk == REQ.id)).where(
                    REQ.job_id == job_id, REQ.state == RequestState.CANCELLED.value)
                await conn.execute(batch_results.insert().from_select(
                    [RES.job_id, RES.sequence, RES.request_id, RES.state, RES.metadata,
                     RES.attempts, RES.complete_time, RES.prompt_tokens, RES.completion_tokens], numbered))
            last = base + count
            await conn.execute(batch_jobs.update().where(JOB.id == job_id).values(
                state=JobState.CANCELLED.value, cancelled=JOB.cancelled + count,
                last_sequence=last, end_time=now, expire_time=now + self.retention_s,
                queue_cursor=None))
            await add_state_event(conn, job_id, JobState.CANCELLED, last, now)
        return await self.get_job(project_id, job_id)

    async def get_request(self, project_id: str, job_id: str, request_id: str
                          ) -> RequestStatus:
        """One request with its input, attempts, last error and result.

        Raises:
            NotFound: unknown job or request; ``RESULTS_EXPIRED`` once purged.
        """
        job = await self.get_job(project_id, job_id)
        async with self.db.read() as conn:
            row = (await conn.execute(
                sa.select(REQ.request_id, REQ.state, REQ.attempts, REQ.last_error, PAY.body,
                          PAY.metadata)
                .select_from(batch_requests.join(batch_payloads, PAY.request_pk == REQ.id))
                .where(REQ.job_id == job_id, REQ.request_id == request_id))).first()
            result_row = None
            if row is not None:
                result_row = (await conn.execute(sa.select(*RESULT_COLUMNS).where(
                    RES.job_id == job_id, RES.request_id == request_id))).first()
        if row is None:
            if job.purged:
                raise NotFound(f"the requests of batch job {job_id!r} expired and were "
                               "purged", reason="RESULTS_EXPIRED",
                               metadata={"jobId": job_id, "requestId": request_id},
                               resource_type="batch_request", resource_name=request_id)
            raise NotFound(f"request {request_id!r} not found in batch job {job_id!r}",
                           reason="REQUEST_NOT_FOUND",
                           metadata={"jobId": job_id, "requestId": request_id},
                           resource_type="batch_request", resource_name=request_id)
        body = json.loads(row.body)
        body["metadata"] = json.loads(row.metadata) if row.metadata else None
        result = result_from_row(result_row) if result_row is not None else None
        last_error = ErrorDetail.from_json(row.last_error)
        if result is not None and result.state is RequestState.FAILED:
            last_error = result.error
        elif result is not None and result.state is RequestState.SUCCEEDED:
            last_error = None
        return RequestStatus(request_id=row.request_id, state=RequestState(row.state),
                             attempts=int(row.attempts), last_error=last_error,
                             request=RequestInput.from_body(row.request_id, body),
                             result=result)

    async def requests_created_since(self, project_id: str, since: float) -> int:
        """Requests in the project's jobs created at or after ``since`` (epoch seconds)."""
        async with self.db.read() as conn:
            return int(await conn.scalar(
                sa.select(sa.func.count()).select_from(batch_requests.join(
                    batch_jobs, REQ.job_id == JOB.id))
                .where(JOB.project_id == project_id, JOB.create_time >= since)) or 0)

    async def file_references(self, project_id: str, uri: str) -> list[str]:
        """Names of the project's jobs that have not ended and still need file ``uri``
        (a file reference finder of the FileService)."""
        open_states = [s.value for s in JobState if not s.is_terminal]
        async with self.db.read() as conn:
            ids = (await conn.execute(
                sa.select(REFS.job_id).distinct()
                .select_from(batch_file_refs.join(batch_jobs, JOB.id == REFS.job_id))
                .where(REFS.uri == uri, JOB.project_id == project_id, JOB.state.in_(open_states))
                .order_by(REFS.job_id))).scalars().all()
        return [f"batch job {job_id}" for job_id in ids]

    # --- results and events --------------------------------------------------------------

    async def results_after(self, job_id: str, cursor: int, limit: int = 1000) -> list[Result]:
        """Results with ``sequence > cursor``, in order (at most ``limit``)."""
        async with self.db.read() as conn:
            rows = (await conn.execute(
                sa.select(*RESULT_COLUMNS).where(RES.job_id == job_id, RES.sequence > cursor)
                .order_by(RES.sequence).limit(limit))).all()
        return [result_from_row(row) for row in rows]

    async def state_events(self, job_id: str) -> list[StateEvent]:
        """Every state change of a job, oldest first."""
        async with self.db.read() as conn:
            rows = (await conn.execute(
                sa.select(EVT.after_sequence, EVT.state, EVT.time).where(EVT.job_id == job_id)
                .order_by(EVT.id))).all()
        return [StateEvent(int(r.after_sequence), JobState(r.state), r.time) for r in rows]

    # --- retention -----------------------------------------------------------------------

    async def purge_expired(self, now: float | None = None, *, chunk: int = 2000) -> int:
        """Delete the results, requests and payloads of jobs past their ``expire_time`` (in
        chunks, so no write holds the database for long); jobs and their events stay.
        Returns how many jobs were purged."""
        now = time.time() if now is None else now
        async with self.db.read() as conn:
            job_ids = (await conn.execute(sa.select(JOB.id).where(
                JOB.expire_time < now, JOB.purged.is_(False)).limit(100))).scalars().all()
        for job_id in job_ids:
            for table, key, column in ((batch_results, RES.sequence, RES.job_id),
                                       (batch_file_refs, REFS.request_pk, REFS.job_id),
                                       (batch_payloads, PAY.request_pk, PAY.job_id),
                                       (batch_requests, REQ.id, REQ.job_id)):
                while True:
                    picked = sa.select(key).where(column == job_id).limit(chunk)
                    async with self.db.write() as conn:
                        gone = (await conn.execute(table.delete().where(
                            column == job_id, key.in_(picked.scalar_subquery())))).rowcount
                    if gone < chunk:
                        break
            async with self.db.write() as conn:
                await conn.execute(batch_jobs.update().where(JOB.id == job_id).values(purged=True))
        return len(job_ids)


def _duplicate(request_id: str) -> AlreadyExists:
    return AlreadyExists(f"the job already has a request {request_id!r}",
                         reason="DUPLICATE_REQUEST_ID", metadata={"requestId": request_id},
                         resource_type="batch_request", resource_name=request_id)


def _listing_tag(project_id: str, state: JobState | None, job_type: str) -> str:
    key = f"{project_id}\x00{state.value if state else ''}\x00{job_type}"
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def _encode_token(last: Job, tag: str) -> str:
    payload = {"v": 1, "l": tag, "t": last.create_time, "i": last.id}
    return base64.urlsafe_b64encode(dumps(payload).encode()).decode().rstrip("=")


def _decode_token(token: str, tag: str) -> tuple[float, str]:
    try:
        payload = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if payload["v"] != 1 or payload["l"] != tag:
            raise ValueError("a token of another listing")
        return float(payload["t"]), str(payload["i"])
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidArgument.field("page_token", "is not a token of this listing (the "
                                    "filters must not change between pages)",
                                    reason="INVALID_PAGE_TOKEN") from exc
