"""Provider tokens used per project and hour (server/usage.py), for the
``quota_provider_tokens_per_day`` quota."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, String, Table

from rowforge.server.storage.schema import metadata

provider_usage = Table(
    "rf_provider_usage",
    metadata,
    Column("project_id", String(64), primary_key=True),
    #: Hours since the epoch (UTC): the quota sums the last 24.
    Column("hour", BigInteger, primary_key=True, autoincrement=False),
    Column("tokens", BigInteger, nullable=False, default=0),
)
