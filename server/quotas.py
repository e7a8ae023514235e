"""Per-project quotas (``quota_*`` settings; 0 means none): tables, rows per table, stored file
bytes, batch requests per day and provider tokens per day (the last in ``server/usage.py``). A write that would pass one is refused whole, before
anything is written: RESOURCE_EXHAUSTED reason ``QUOTA_EXCEEDED`` with a
``google.rpc.QuotaFailure`` naming the quota (and ErrorInfo metadata with the limit and use).

The checks read the current use and then write, so two concurrent writes of one project may
both pass at the very edge of a quota (by at most one call each): a quota bounds what a
project can take, it is not a transactional counter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rowforge.server.errors import ResourceExhausted


class QuotaExceeded(ResourceExhausted):
    """A project quota would be passed (RESOURCE_EXHAUSTED ``QUOTA_EXCEEDED``)."""

    default_reason = "QUOTA_EXCEEDED"

    def __init__(self, quota: str, project_id: str, limit: int, used: int, adding: int,
                 unit: str) -> None:
        super().__init__(
            f"project {project_id!r} would exceed its {quota} quota: {used:,} {unit} used, "
            f"{adding:,} more asked, the limit is {limit:,}",
            metadata={"quota": quota, "limit": limit, "used": used, "requested": adding})
        self.quota = quota
        self.subject = f"project:{project_id}"
        self.description = f"{quota}: limit {limit}, used {used}, requested {adding}"


@dataclass(frozen=True)
class Quotas:
    """The limits of every project (0: no limit)."""

    tables: int = 0
    rows_per_table: int = 0
    stored_bytes: int = 0
    batch_requests_per_day: int = 0
    provider_tokens_per_day: int = 0

    @classmethod
    def from_settings(cls, settings: Any) -> Quotas:
        return cls(tables=settings.quota_tables, rows_per_table=settings.quota_rows_per_table,
                   stored_bytes=settings.quota_stored_bytes,
                   batch_requests_per_day=settings.quota_batch_requests_per_day,
                   provider_tokens_per_day=settings.quota_provider_tokens_per_day)

    @staticmethod
    def check(quota: str, limit: int, project_id: str, used: int, adding: int,
              unit: str) -> None:
        """Raise :class:`QuotaExceeded` when ``used + adding`` passes ``limit`` (0: none)."""
        if limit and used + adding > limit:
            raise QuotaExceeded(quota, project_id, limit, used, adding, unit)


NO_QUOTAS = Quotas()
