"""Baseline: the system tables as the last release before migrations (e6514eb) made them.

A data dir from that release has no ``alembic_version`` table; rowforge stamps it at this
revision (see ``migrations.prepare``) and upgrades it from here.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rf_batch_jobs",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("temperature", sa.Double(), nullable=False),
        sa.Column("max_output_tokens", sa.Integer(), nullable=False),
        sa.Column("system_instruction", sa.Text(), nullable=False),
        sa.Column("job_type", sa.String(length=200), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=True),
        sa.Column("max_batch_size", sa.Integer(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=True),
        sa.Column("request_hash", sa.String(length=64), nullable=True),
        sa.Column("total_requests", sa.BigInteger(), nullable=False),
        sa.Column("succeeded", sa.BigInteger(), nullable=False),
        sa.Column("failed", sa.BigInteger(), nullable=False),
        sa.Column("cancelled", sa.BigInteger(), nullable=False),
        sa.Column("input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost_usd", sa.Double(), nullable=False),
        sa.Column("last_sequence", sa.BigInteger(), nullable=False),
        sa.Column("create_time", sa.Double(), nullable=False),
        sa.Column("submit_time", sa.Double(), nullable=True),
        sa.Column("start_time", sa.Double(), nullable=True),
        sa.Column("end_time", sa.Double(), nullable=True),
        sa.Column("expire_time", sa.Double(), nullable=True),
        sa.Column("purged", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("project_id", "idempotency_key", name="uq_rf_batch_jobs_idempotency"),
    )
    op.create_index("ix_rf_batch_jobs_expire", "rf_batch_jobs", ["expire_time"], unique=False)
    op.create_index(
        "ix_rf_batch_jobs_project_time",
        "rf_batch_jobs",
        ["project_id", "create_time", "id"],
        unique=False,
    )
    op.create_table(
        "rf_batch_results",
        sa.Column("job_id", sa.String(length=40), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("response_text", sa.Text(), nullable=True),
        sa.Column("response_json", sa.Text(), nullable=True),
        sa.Column("prompt_tokens", sa.BigInteger(), nullable=False),
        sa.Column("completion_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost_usd", sa.Double(), nullable=True),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column("metadata", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("complete_time", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("job_id", "sequence"),
        sa.UniqueConstraint("job_id", "request_id", name="uq_rf_batch_results_job_request"),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "rf_files",
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("content_type", sa.String(length=200), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("project_id", "id"),
    )
    op.create_index(
        "ix_rf_files_project_time", "rf_files", ["project_id", "create_time", "id"], unique=False
    )
    op.create_index("ix_rf_files_sha256", "rf_files", ["sha256"], unique=False)
    op.create_table(
        "rf_idempotency_keys",
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("method", sa.String(length=200), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("response", sa.LargeBinary(), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("project_id", "method", "key"),
    )
    op.create_table(
        "rf_knowledge_changes",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("storage_id", sa.String(length=40), nullable=False),
        sa.Column("row_id", sa.String(length=40), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "ix_rf_knowledge_changes_table", "rf_knowledge_changes", ["storage_id", "id"], unique=False
    )
    op.create_table(
        "rf_projects",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "rf_server_state",
        sa.Column("key", sa.String(length=100), nullable=False),
        sa.Column("value", sa.JSON(), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_table(
        "rf_user_tables",
        sa.Column("storage_id", sa.String(length=40), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("table_type", sa.String(length=16), nullable=False),
        sa.Column("table_id", sa.String(length=100), nullable=False),
        sa.Column("columns", sa.JSON(), nullable=False),
        sa.Column("embedding_model", sa.String(length=200), nullable=False),
        sa.Column("text_analyzer", sa.String(length=40), server_default="", nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("next_column", sa.Integer(), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("storage_id"),
        sa.UniqueConstraint("project_id", "table_type", "table_id", name="uq_rf_user_tables_id"),
    )
    op.create_index(
        "ix_rf_user_tables_project", "rf_user_tables", ["project_id", "table_type"], unique=False
    )
    op.create_table(
        "rf_batch_call_counts",
        sa.Column("job_id", sa.String(length=40), nullable=False),
        sa.Column("calls", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["rf_batch_jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("job_id"),
    )
    op.create_table(
        "rf_batch_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("job_id", sa.String(length=40), nullable=False),
        sa.Column("after_sequence", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("time", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["rf_batch_jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_rf_batch_events_job", "rf_batch_events", ["job_id", "id"], unique=False)
    op.create_table(
        "rf_batch_requests",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("job_id", sa.String(length=40), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("lease_owner", sa.String(length=200), nullable=True),
        sa.Column("due_time", sa.Double(), nullable=True),
        sa.Column("last_error", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(["job_id"], ["rf_batch_jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("job_id", "request_id", name="uq_rf_batch_requests_job_request"),
    )
    op.create_index("ix_rf_batch_requests_due", "rf_batch_requests", ["due_time"], unique=False)
    op.create_index(
        "ix_rf_batch_requests_job_state", "rf_batch_requests", ["job_id", "state"], unique=False
    )
    op.create_index(
        "ix_rf_batch_requests_owner", "rf_batch_requests", ["lease_owner"], unique=False
    )
    op.create_table(
        "rf_tokens",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked", sa.Boolean(), nullable=False),
        sa.Column("scope", sa.String(length=16), server_default="admin", nullable=False),
        sa.Column("expire_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoke_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_time", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["project_id"], ["rf_projects.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("secret_hash"),
    )
    op.create_index("ix_rf_tokens_project", "rf_tokens", ["project_id"], unique=False)
    op.create_table(
        "rf_batch_file_refs",
        sa.Column(
            "request_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("uri", sa.String(length=1024), nullable=False),
        sa.Column("job_id", sa.String(length=40), nullable=False),
        sa.ForeignKeyConstraint(["request_pk"], ["rf_batch_requests.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("request_pk", "uri"),
    )
    op.create_index("ix_rf_batch_file_refs_uri", "rf_batch_file_refs", ["uri"], unique=False)
    op.create_table(
        "rf_batch_payloads",
        sa.Column(
            "request_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("job_id", sa.String(length=40), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("metadata", sa.Text(), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["request_pk"], ["rf_batch_requests.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("request_pk"),
    )
    op.create_index("ix_rf_batch_payloads_job", "rf_batch_payloads", ["job_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_rf_batch_payloads_job", table_name="rf_batch_payloads")
    op.drop_table("rf_batch_payloads")
    op.drop_index("ix_rf_batch_file_refs_uri", table_name="rf_batch_file_refs")
    op.drop_table("rf_batch_file_refs")
    op.drop_index("ix_rf_tokens_project", table_name="rf_tokens")
    op.drop_table("rf_tokens")
    op.drop_index("ix_rf_batch_requests_owner", table_name="rf_batch_requests")
    op.drop_index("ix_rf_batch_requests_job_state", table_name="rf_batch_requests")
    op.drop_index("ix_rf_batch_requests_due", table_name="rf_batch_requests")
    op.drop_table("rf_batch_requests")
    op.drop_index("ix_rf_batch_events_job", table_name="rf_batch_events")
    op.drop_table("rf_batch_events")
    op.drop_table("rf_batch_call_counts")
    op.drop_index("ix_rf_user_tables_project", table_name="rf_user_tables")
    op.drop_table("rf_user_tables")
    op.drop_table("rf_server_state")
    op.drop_table("rf_projects")
    op.drop_index("ix_rf_knowledge_changes_table", table_name="rf_knowledge_changes")
    op.drop_table("rf_knowledge_changes")
    op.drop_table("rf_idempotency_keys")
    op.drop_index("ix_rf_files_sha256", table_name="rf_files")
    op.drop_index("ix_rf_files_project_time", table_name="rf_files")
    op.drop_table("rf_files")
    op.drop_table("rf_batch_results")
    op.drop_index("ix_rf_batch_jobs_project_time", table_name="rf_batch_jobs")
    op.drop_index("ix_rf_batch_jobs_expire", table_name="rf_batch_jobs")
    op.drop_table("rf_batch_jobs")
