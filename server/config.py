"""Server configuration: defaults, then a TOML file, then ``ROWFORGE_*`` environment variables.

Every setting has a zero-config default for the embedded mode (SQLite and files in the data
dir, built-in offline models, auth off on loopback).
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MiB = 1024 * 1024
SANDBOX_NETWORK_MODES = ("", "off", "public")


@dataclass(frozen=True)
class Settings:
    """All server settings. Build with :func:`load_settings`."""

    host: str = "127.0.0.1"
    port: int = 50051
    data_dir: Path = Path("data")
    #: SQLAlchemy async URL; empty means SQLite (aiosqlite) in ``data_dir``.
    database_url: str = ""
    #: Require ``authorization: Bearer <token>`` and ``x-project-id`` on every call.
    auth: bool = False
    #: Allow listening on a non-loopback address with auth off.
    insecure: bool = False
    #: Seconds in-flight calls get to finish on SIGTERM before they are cancelled.
    grace_period_s: float = 10.0
    #: Largest gRPC message accepted or sent (a batch request may carry 32 MB of content).
    max_message_bytes: int = 40 * MiB
    reflection: bool = True
    log_level: str = "INFO"
    log_json: bool = True
    #: Model entries added to the built-in models (see docs/config.md / README).
    models: tuple[dict[str, Any], ...] = ()
    default_chat_model: str = "rowforge/chat"
    default_embed_model: str = "rowforge/embed"
    default_rerank_model: str = "rowforge/rerank"
    #: Concurrency of generated cells per model and per table.
    model_concurrency: int = 64
    table_concurrency: int = 32
    #: Python-column sandbox.
    sandbox_workers: int = 2
    sandbox_timeout_s: float = 10.0
    sandbox_memory_mb: int = 512
    #: Network access of Python cells: "off" (none) or "public" (public addresses only,
    #: through the sandbox's egress proxy). Empty: "off" when auth is on or the server
    #: listens beyond loopback, "public" for the embedded loopback server (README, security).
    sandbox_network: str = ""
    #: File size limits per kind.
    max_document_bytes: int = 200 * MiB
    max_image_bytes: int = 20 * MiB
    max_audio_bytes: int = 120 * MiB
    #: An upload that sends nothing for this long is abandoned (DEADLINE_EXCEEDED).
    upload_idle_timeout_s: float = 60.0
    #: Batch jobs.
    batch_workers: int = 64
    batch_max_attempts: int = 5
    batch_lease_s: float = 60.0
    batch_retention_days: float = 30.0
    #: Seconds one batch model call may take before it is a (retryable) timeout.
    batch_request_timeout_s: float = 60.0
    #: Backoff before a batch request's first retry, and the cap of any backoff (seconds).
    batch_backoff_base_s: float = 1.0
    batch_backoff_max_s: float = 60.0
    #: Identity of this replica for leases (default: hostname-pid).
    worker_id: str = ""
    #: ``auto`` (uvloop when installed), ``uvloop`` (required) or ``asyncio``.
    event_loop: str = "auto"
    #: Move everything alive after start-up (imports, litellm's tables) out of the garbage
    #: collector's reach, so later full collections only scan request-time objects.
    gc_freeze: bool = True

    def __post_init__(self) -> None:
        if self.sandbox_network not in SANDBOX_NETWORK_MODES:
            raise ValueError(f"sandbox_network: expected \"off\" or \"public\", got "
                             f"{self.sandbox_network!r}")

    @property
    def effective_sandbox_network(self) -> str:
        """``sandbox_network``, or its default for this server when it is empty."""
        if self.sandbox_network:
            return self.sandbox_network
        return "off" if self.auth or not self.is_loopback else "public"

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'rowforge.db').resolve()}"

    @property
    def is_loopback(self) -> bool:
        return self.host in {"127.0.0.1", "localhost", "::1", "[::1]"} or self.host.startswith(
            "127."
        )


_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}


def _coerce(name: str, value: Any) -> Any:
    """Convert a TOML/env value to the type of the field ``name``."""
    default = _FIELDS[name].default
    if name == "data_dir":
        return Path(value).expanduser()
    if name == "models":
        if isinstance(value, str):
            import json

            value = json.loads(value)
        if not isinstance(value, list) or not all(isinstance(m, dict) for m in value):
            raise ValueError("models must be a list of tables ([[models]] in TOML)")
        return tuple(value)
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in {"1", "true", "yes", "on"}:
            return True
        if text in {"0", "false", "no", "off", ""}:
            return False
        raise ValueError(f"{name}: expected a boolean, got {value!r}")
    if isinstance(default, int):
        return int(value)
    if isinstance(default, float):
        return float(value)
    if name == "sandbox_network":
        value = str(value).strip().lower()
        if value not in SANDBOX_NETWORK_MODES:
            raise ValueError(f"{name}: expected \"off\" or \"public\", got {value!r}")
    return str(value)


def load_settings(
    config_file: str | Path | None = None,
    env: dict[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Build settings from defaults, an optional TOML file, the environment, then overrides.

    Raises:
        ValueError: an unknown key or a value of the wrong type, naming the key.
    """
    env = dict(os.environ if env is None else env)
    values: dict[str, Any] = {}
    config_file = config_file or env.get("ROWFORGE_CONFIG") or None
    if config_file:
        with open(config_file, "rb") as fh:
            data = tomllib.load(fh)
        data = data.get("rowforge", data)
        for key, value in data.items():
            if key not in _FIELDS:
                raise ValueError(f"{config_file}: unknown setting {key!r}")
            values[key] = _coerce(key, value)
    for name in _FIELDS:
        raw = env.get(f"ROWFORGE_{name.upper()}")
        if raw is not None and raw != "":
            try:
                values[name] = _coerce(name, raw)
            except ValueError as exc:
                raise ValueError(f"ROWFORGE_{name.upper()}: {exc}") from None
    for key, value in overrides.items():
        if value is not None:
            if key not in _FIELDS:
                raise ValueError(f"unknown setting {key!r}")
            values[key] = _coerce(key, value)
    return Settings(**values)


