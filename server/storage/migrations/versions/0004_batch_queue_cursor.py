"""Batch jobs queued in the background: the queuer's cursor (table jobs over many rows).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    present = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("rf_batch_jobs")}
    if "queue_cursor" not in present:  # a data dir from before migrations, adopted as the
        # baseline, got rf_batch_jobs created with today's columns already
        op.add_column("rf_batch_jobs", sa.Column("queue_cursor", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("rf_batch_jobs") as batch:
        batch.drop_column("queue_cursor")
