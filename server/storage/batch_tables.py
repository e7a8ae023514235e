"""Tables of the batch domain: jobs, their requests (lean rows for the work queue), request
payloads (kept apart: up to 32 MB each), results and job state events.

Times are epoch seconds (``Double``): lease and retry arithmetic compares them directly, the
same way on SQLite and PostgreSQL, and keyset pages compare them exactly.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Double,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from rowforge.server.storage.schema import metadata

# SQLite only autoincrements an INTEGER PRIMARY KEY.
_ROW_ID = BigInteger().with_variant(Integer, "sqlite")

batch_jobs = Table(
    "rf_batch_jobs",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("project_id", String(64), nullable=False),
    Column("state", String(16), nullable=False),
    Column("model", String(200), nullable=False),
    Column("temperature", Double, nullable=False),
    Column("max_output_tokens", Integer, nullable=False),
    Column("system_instruction", Text, nullable=False, default=""),
    Column("job_type", String(200), nullable=False, default=""),
    Column("metadata", JSON, nullable=True),
    Column("max_batch_size", Integer, nullable=False),
    # NULL when the caller sent none (NULLs never collide in the unique constraint).
    Column("idempotency_key", String(200), nullable=True),
    Column("request_hash", String(64), nullable=True),
    Column("total_requests", BigInteger, nullable=False, default=0),
    Column("succeeded", BigInteger, nullable=False, default=0),
    Column("failed", BigInteger, nullable=False, default=0),
    Column("cancelled", BigInteger, nullable=False, default=0),
    Column("input_tokens", BigInteger, nullable=False, default=0),
    Column("output_tokens", BigInteger, nullable=False, default=0),
    Column("cost_usd", Double, nullable=False, default=0.0),
    # The last sequence handed out to a result of this job (results are numbered 1, 2, ...).
    Column("last_sequence", BigInteger, nullable=False, default=0),
    Column("create_time", Double, nullable=False),
    Column("submit_time", Double, nullable=True),
    Column("start_time", Double, nullable=True),
    Column("end_time", Double, nullable=True),
    Column("expire_time", Double, nullable=True),
    Column("purged", Boolean, nullable=False, default=False),
    # Where a job whose requests are queued in the background (a table job over all or
    # filtered rows) stands: an opaque cursor of its queuer; NULL once every request is
    # queued. A job with a cursor does not end, however many of its requests ended.
    Column("queue_cursor", Text, nullable=True),
    UniqueConstraint("project_id", "idempotency_key", name="uq_rf_batch_jobs_idempotency"),
)

# ListJobs: newest first per project (keyset on create_time, id).
Index("ix_rf_batch_jobs_project_time", batch_jobs.c.project_id, batch_jobs.c.create_time,
      batch_jobs.c.id)
# The retention sweep.
Index("ix_rf_batch_jobs_expire", batch_jobs.c.expire_time)

batch_requests = Table(
    "rf_batch_requests",
    metadata,
    Column("id", _ROW_ID, primary_key=True, autoincrement=True),
    Column("job_id", String(40), ForeignKey("rf_batch_jobs.id", ondelete="CASCADE"),
           nullable=False),
    Column("request_id", String(64), nullable=False),
    # Position in the job (order of AddRequests).
    Column("position", BigInteger, nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("lease_owner", String(200), nullable=True),
    # When the queue must look at the request again: a pending request's next attempt, a
    # running request's lease expiry; NULL while not submitted and once ended. One column, so
    # one index range scan (``due_time <= now``) finds all claimable work, expired leases too.
    Column("due_time", Double, nullable=True),
    Column("last_error", JSON, nullable=True),
    UniqueConstraint("job_id", "request_id", name="uq_rf_batch_requests_job_request"),
)

Index("ix_rf_batch_requests_due", batch_requests.c.due_time)
Index("ix_rf_batch_requests_owner", batch_requests.c.lease_owner)
Index("ix_rf_batch_requests_job_state", batch_requests.c.job_id, batch_requests.c.state)

# Provider calls started per job, written *before* each call (batched over a few ms), so a
# call whose result a crash lost still counts: the count of paid calls, resends included.
batch_call_counts = Table(
    "rf_batch_call_counts",
    metadata,
    Column("job_id", String(40), ForeignKey("rf_batch_jobs.id", ondelete="CASCADE"),
           primary_key=True),
    Column("calls", BigInteger, nullable=False, default=0),
)

batch_payloads = Table(
    "rf_batch_payloads",
    metadata,
    Column("request_pk", _ROW_ID, ForeignKey("rf_batch_requests.id", ondelete="CASCADE"),
           primary_key=True),
    Column("job_id", String(40), nullable=False),
    # JSON: {"parts": [...], "schema": ..., "schema_name": ...}.
    Column("body", Text, nullable=False),
    # The request's metadata as JSON text (copied as is into its result).
    Column("metadata", Text, nullable=True),
    # Bytes of body + metadata: workers batch-load small payloads, large ones one at a time.
    Column("size", BigInteger, nullable=False, default=0),
)

Index("ix_rf_batch_payloads_job", batch_payloads.c.job_id)

batch_results = Table(
    "rf_batch_results",
    metadata,
    Column("job_id", String(40), primary_key=True),
    Column("sequence", BigInteger, primary_key=True),
    Column("request_id", String(64), nullable=False),
    Column("state", String(16), nullable=False),
    Column("response_text", Text, nullable=True),
    # JSON text of the parsed structured answer (NULL when none was asked for).
    Column("response_json", Text, nullable=True),
    Column("prompt_tokens", BigInteger, nullable=False, default=0),
    Column("completion_tokens", BigInteger, nullable=False, default=0),
    Column("cost_usd", Double, nullable=True),
    Column("error", JSON, nullable=True),
    Column("metadata", Text, nullable=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("complete_time", Double, nullable=False),
    # The last line of defence: a request can never have two results.
    UniqueConstraint("job_id", "request_id", name="uq_rf_batch_results_job_request"),
    sqlite_with_rowid=False,
)

batch_events = Table(
    "rf_batch_events",
    metadata,
    Column("id", _ROW_ID, primary_key=True, autoincrement=True),
    Column("job_id", String(40), ForeignKey("rf_batch_jobs.id", ondelete="CASCADE"),
           nullable=False),
    # The job's last result sequence when the event happened: WatchJob delivers the event
    # right after that result.
    Column("after_sequence", BigInteger, nullable=False),
    Column("state", String(16), nullable=False),
    Column("time", Double, nullable=False),
)

Index("ix_rf_batch_events_job", batch_events.c.job_id, batch_events.c.id)

# FileService URIs (``file://``) that requests of a job use: a file still needed by a job
# that has not ended cannot be deleted without ``force``.
batch_file_refs = Table(
    "rf_batch_file_refs",
    metadata,
    Column("request_pk", _ROW_ID, ForeignKey("rf_batch_requests.id", ondelete="CASCADE"),
           primary_key=True),
    Column("uri", String(1024), primary_key=True),
    Column("job_id", String(40), nullable=False),
)

Index("ix_rf_batch_file_refs_uri", batch_file_refs.c.uri)
