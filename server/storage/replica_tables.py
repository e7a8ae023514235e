"""Replicas of one database and their liveness leases (server/replicas.py)."""

from __future__ import annotations

from sqlalchemy import Column, Float, Integer, String, Table

from rowforge.server.storage.schema import metadata

replicas = Table(
    "rf_replicas",
    metadata,
    #: The replica's worker id (``worker_id`` setting, default ``<host>-<pid>``): the owner
    #: name of its batch leases and of the table cells it is generating.
    Column("id", String(200), primary_key=True),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    #: Seconds since the epoch.
    Column("started_at", Float, nullable=False),
    Column("heartbeat_at", Float, nullable=False),
    #: Past this the replica is dead; a live one takes its orphaned work over (and holds the
    #: row for ``lease_s`` meanwhile, naming itself in ``recovered_by``).
    Column("lease_until", Float, nullable=False),
    Column("recovered_by", String(200), nullable=True),
)
