"""Provider tokens per project and hour (the `quota_provider_tokens_per_day` quota).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rf_provider_usage",
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("hour", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("tokens", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("project_id", "hour"),
    )


def downgrade() -> None:
    op.drop_table("rf_provider_usage")
