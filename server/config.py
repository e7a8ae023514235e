"""Server configuration: defaults, then a TOML file, then ``ROWFORGE_*`` environment variables.

Every setting has a zero-config default for the embedded mode (SQLite and files in the data
dir, built-in offline models, auth off on loopback).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MiB = 1024 * 1024
SANDBOX_NETWORK_MODES = ("", "off", "public")
FILES_BACKENDS = ("local", "s3")


@dataclass(frozen=True)
class Settings:
    """All server settings. Build with :func:`load_settings`."""

    #: Address to listen on; a non-loopback one needs auth (or ``insecure``).
    host: str = "127.0.0.1"
    #: Port to listen on; 0 picks a free one (printed in the "rowforge listening" line).
    port: int = 50051
    #: Where the SQLite database, files, indexes and the sandbox's scratch space live.
    data_dir: Path = Path("data")
    #: SQLAlchemy async URL; empty means SQLite (aiosqlite) in ``data_dir``.
    database_url: str = ""
    #: Require ``authorization: Bearer <token>`` and ``x-project-id`` on every call.
    auth: bool = False
    #: Allow listening on a non-loopback address with auth off.
    insecure: bool = False
    #: PEM certificate chain to serve TLS with (with ``tls_key``; reloaded on SIGHUP). Empty:
    #: plaintext.
    tls_cert: str = ""
    #: PEM private key of ``tls_cert``.
    tls_key: str = ""
    #: PEM CA bundle for mutual TLS: clients must present a certificate it signed (refused at
    #: the handshake otherwise). Needs ``tls_cert``.
    tls_client_ca: str = ""
    #: Per-project quota: tables (of all types). 0: no limit.
    quota_tables: int = 0
    #: Per-project quota: rows in one table. 0: no limit.
    quota_rows_per_table: int = 0
    #: Per-project quota: bytes of stored files. 0: no limit.
    quota_stored_bytes: int = 0
    #: Per-project quota: batch requests in the jobs created in the last 24 hours. 0: no
    #: limit.
    quota_batch_requests_per_day: int = 0
    #: Per-project quota: model tokens (prompt + completion, every model call: cells,
    #: direct calls, batch requests) in the last 24 hours; a call is refused once it is
    #: reached. 0: no limit (and no usage is recorded).
    quota_provider_tokens_per_day: int = 0
    #: OpenTelemetry traces: a span per RPC with children for model calls, database
    #: writes, sandbox runs and searches, exported as the ``OTEL_*`` variables say
    #: (``OTEL_TRACES_EXPORTER`` otlp/console/none, ``OTEL_EXPORTER_OTLP_ENDPOINT``, ...).
    tracing: bool = False
    #: Serve Prometheus metrics over HTTP at ``metrics_host:metrics_port`` ``/metrics``.
    metrics: bool = False
    #: Address of the metrics endpoint (keep it private: it is not authenticated).
    metrics_host: str = "127.0.0.1"
    #: Port of the metrics endpoint (0 picks a free one, logged as "metrics served").
    metrics_port: int = 9464
    #: RPCs served at once (streams included); beyond it calls are refused at once with
    #: RESOURCE_EXHAUSTED ``SERVER_OVERLOADED`` and a retry delay, instead of queueing.
    #: 0: no cap.
    max_concurrent_rpcs: int = 4096
    #: Seconds after which a client connection is asked to reconnect (GOAWAY), so long-lived
    #: HTTP/2 connections spread again over the replicas behind a load balancer. 0: never.
    max_connection_age_s: float = 1800.0
    #: Seconds the calls of a connection past its age get to finish before it is closed.
    max_connection_age_grace_s: float = 300.0
    #: Seconds between the server's keepalive pings on an idle connection (finds dead peers).
    keepalive_time_s: float = 7200.0
    #: Seconds in-flight calls get to finish on SIGTERM before they are cancelled.
    grace_period_s: float = 10.0
    #: Seconds a stopping replica (SIGTERM) keeps serving after its health turned
    #: NOT_SERVING, so that load balancers and ``round_robin`` clients watching the health
    #: service send new calls elsewhere before it stops accepting them (deploy/README.md).
    drain_delay_s: float = 0.0
    #: Largest gRPC message accepted or sent (a batch request may carry 32 MB of content).
    max_message_bytes: int = 40 * MiB
    #: Serve gRPC server reflection (what grpcurl and buf curl use without proto files).
    reflection: bool = True
    #: Log level: DEBUG, INFO, WARNING or ERROR.
    log_level: str = "INFO"
    #: Logs as JSON lines on stderr (false: plain text; ``rowforge serve --log-format``).
    log_json: bool = True
    #: Models added to the built-in ones: ``[[models]]`` tables in TOML, a JSON list in
    #: ``ROWFORGE_MODELS`` (fields below).
    models: tuple[dict[str, Any], ...] = ()
    #: Model used when a chat call or LLM column names none.
    default_chat_model: str = "rowforge/chat"
    #: Model used when an embedding call or knowledge table names none.
    default_embed_model: str = "rowforge/embed"
    #: Model used when a rerank call names none.
    default_rerank_model: str = "rowforge/rerank"
    #: Generated cells running at once per model.
    model_concurrency: int = 64
    #: Generated cells running at once per table.
    table_concurrency: int = 32
    #: Worker processes running Python-column cells.
    sandbox_workers: int = 2
    #: Seconds one Python cell may run before it becomes a cell error.
    sandbox_timeout_s: float = 10.0
    #: Memory limit of one Python cell, in MiB.
    sandbox_memory_mb: int = 512
    #: Network access of Python cells: "off" (none) or "public" (public addresses only,
    #: through the sandbox's egress proxy). Empty: "off" when auth is on or the server
    #: listens beyond loopback, "public" for the embedded loopback server (README, security).
    sandbox_network: str = ""
    #: Largest document file (PDF, Office, text ...) accepted.
    max_document_bytes: int = 200 * MiB
    #: Largest image file accepted.
    max_image_bytes: int = 20 * MiB
    #: Largest audio file accepted.
    max_audio_bytes: int = 120 * MiB
    #: An upload that sends nothing for this long is abandoned (DEADLINE_EXCEEDED).
    upload_idle_timeout_s: float = 60.0
    #: Where file content lives: "local" (``data_dir``/files) or "s3" (an S3-compatible
    #: object store, shared by replicas on several machines; credentials come from the
    #: standard ``AWS_*`` variables or the instance's role). In TOML also ``backend`` under a
    #: ``[files]`` table, as are the ``files_*`` settings below.
    files_backend: str = "local"
    #: S3 bucket of the "s3" backend (it must exist).
    files_bucket: str = ""
    #: Key prefix of every object the "s3" backend writes (e.g. ``rowforge/``).
    files_prefix: str = ""
    #: Endpoint URL of an S3-compatible store (MinIO, Ceph, R2 ...). Empty: AWS S3.
    files_endpoint_url: str = ""
    #: Region of the bucket. Empty: from ``AWS_REGION``/``AWS_DEFAULT_REGION`` or us-east-1.
    files_region: str = ""
    #: Part size of the "s3" backend's multipart uploads, in MiB (5 to 512): an upload holds
    #: at most two parts in memory, and smaller files go up in one request.
    files_part_mb: int = 8
    #: Directory of the "local" backend's files for replicas on PostgreSQL; empty:
    #: ``data_dir``/files. Replicas on one machine (``reuse_port``) share one (uploads are
    #: written under a per-process name and linked into place; deletes take a file lock).
    files_dir: str = ""
    #: Let several servers listen on the same ``host:port`` (SO_REUSEPORT: Linux spreads new
    #: connections over them): replicas on one machine without a load balancer, e.g. one per
    #: core. They need a shared PostgreSQL ``database_url`` and shared files (``files_dir``
    #: or the "s3" backend); see deploy/README.md.
    reuse_port: bool = False
    #: Batch requests processed at once by this replica.
    batch_workers: int = 64
    #: Attempts of one batch request (first included) before it fails.
    batch_max_attempts: int = 5
    #: Seconds a replica holds a claimed batch request before another may take it over.
    batch_lease_s: float = 60.0
    #: Days an ended batch job and its results are kept.
    batch_retention_days: float = 30.0
    #: Seconds one batch model call may take before it is a (retryable) timeout.
    batch_request_timeout_s: float = 60.0
    #: Seconds before a batch request's first retry (doubling after).
    batch_backoff_base_s: float = 1.0
    #: Cap of any batch retry backoff, in seconds.
    batch_backoff_max_s: float = 60.0
    #: Memory budget of this replica's knowledge-table graphs (HNSW), in MiB: past it the
    #: least recently searched tables' indexes are saved and evicted, and loaded again on
    #: their next search. 0: a quarter of the machine's memory.
    knowledge_index_memory_mb: int = 0
    #: Identity of this replica for leases (default: hostname-pid).
    worker_id: str = ""
    #: Seconds a replica stays alive in the others' eyes without renewing its lease (renewed
    #: every third of it); past it, a live replica finishes its orphaned work (its cells
    #: become ERROR "interrupted", its batch leases are re-queued).
    replica_lease_s: float = 15.0
    #: ``auto`` (uvloop when installed), ``uvloop`` (required) or ``asyncio``.
    event_loop: str = "auto"
    #: Move everything alive after start-up (imports, litellm's tables) out of the garbage
    #: collector's reach, so later full collections only scan request-time objects.
    gc_freeze: bool = True
    #: Seconds between checks that give freed heap memory back to the system (glibc
    #: ``malloc_trim``) when RSS grew since the last one, with glibc's heaps capped at 2
    #: (``MALLOC_ARENA_MAX`` overrides); 0 turns both off.
    memory_trim_s: float = 10.0

    def __post_init__(self) -> None:
        if self.sandbox_network not in SANDBOX_NETWORK_MODES:
            raise ValueError(f"sandbox_network: expected \"off\" or \"public\", got "
                             f"{self.sandbox_network!r}")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("tls_cert and tls_key: give both (a certificate chain and its key) "
                             "or neither")
        if self.tls_client_ca and not self.tls_cert:
            raise ValueError("tls_client_ca: mutual TLS needs tls_cert and tls_key too")
        if self.files_backend not in FILES_BACKENDS:
            raise ValueError(f"files_backend: expected \"local\" or \"s3\", got "
                             f"{self.files_backend!r}")
        if self.files_backend == "s3" and not self.files_bucket:
            raise ValueError("files_bucket: the \"s3\" files backend needs a bucket")
        if self.files_backend == "s3" and max(self.max_document_bytes, self.max_image_bytes,
                                              self.max_audio_bytes) > 5 * 1024 * MiB:
            raise ValueError("max_document_bytes/max_image_bytes/max_audio_bytes: the \"s3\" "
                             "files backend stores files of at most 5 GiB (one CopyObject)")
        if self.knowledge_index_memory_mb < 0:
            raise ValueError("knowledge_index_memory_mb: expected 0 (a quarter of the "
                             f"memory) or more, got {self.knowledge_index_memory_mb}")
        if self.replica_lease_s < 1:
            raise ValueError(f"replica_lease_s: expected at least 1 (seconds), got "
                             f"{self.replica_lease_s}")
        if self.files_dir and not self.database_url.startswith("postgresql"):
            raise ValueError("files_dir: only for replicas on PostgreSQL; the embedded default "
                             "keeps its files in data_dir/files, where backups find them")
        if self.reuse_port and not self.database_url.startswith("postgresql"):
            raise ValueError("reuse_port: servers sharing a port are replicas of one service and "
                             "need a shared PostgreSQL database_url (on SQLite each would take "
                             "the others' unfinished work for its own)")
        if self.reuse_port and self.files_backend == "local" and not self.files_dir:
            raise ValueError("reuse_port: servers sharing a port must share their files: set "
                             "files_dir to one directory for all of them (or use the \"s3\" "
                             "files backend)")
        if not 5 <= self.files_part_mb <= 512:
            raise ValueError(f"files_part_mb: expected 5 to 512 (MiB), got {self.files_part_mb}")

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
    def knowledge_index_memory_bytes(self) -> int:
        """``knowledge_index_memory_mb`` in bytes, its default resolved for this machine."""
        if self.knowledge_index_memory_mb > 0:
            return self.knowledge_index_memory_mb * MiB
        try:
            total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            total = 4096 * MiB
        return max(256 * MiB, total // 4)

    @property
    def is_loopback(self) -> bool:
        return self.host in {"127.0.0.1", "localhost", "::1", "[::1]"} or self.host.startswith(
            "127."
        )


_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}


class ConfigError(ValueError):
    """A setting that cannot be used, with where it came from and what to do.

    ``str(error)`` is one line naming the file or variable and the key, e.g.
    ``typo.toml: unknown setting 'prot' (did you mean 'port'?)``.
    """


def nearest(name: str, candidates: Any) -> str:
    """`` (did you mean 'x'?)`` for the closest candidate, or ``''``."""
    match = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _coerce(name: str, value: Any) -> Any:
    """Convert a TOML/env value to the type of the field ``name``."""
    default = _FIELDS[name].default
    if name == "data_dir":
        return Path(value).expanduser()
    if name == "models":
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError as exc:
                raise ValueError(f"models: not valid JSON ({exc})") from None
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
    if isinstance(default, int | float):
        try:
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                raise ValueError
            return type(default)(value)
        except ValueError:
            kind = "an integer" if isinstance(default, int) else "a number"
            raise ValueError(f"{name}: expected {kind}, got {value!r}") from None
    if not isinstance(value, str):
        raise ValueError(f"{name}: expected a string, got {value!r}")
    if name == "files_backend":
        value = value.strip().lower()
    if name == "sandbox_network":
        value = value.strip().lower()
        if value not in SANDBOX_NETWORK_MODES:
            raise ValueError(f"{name}: expected \"off\" or \"public\", got {value!r}")
    return value


def load_settings(
    config_file: str | Path | None = None,
    env: dict[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Build settings from defaults, an optional TOML file, the environment, then overrides.

    Raises:
        ConfigError: (a ``ValueError``) one line naming the file or variable and the key: an
            unreadable file, an unknown key (with the nearest valid one), a value of the wrong
            type, or a ``models`` entry the model registry refuses.
    """
    env = dict(os.environ if env is None else env)
    values: dict[str, Any] = {}
    source: dict[str, str] = {}
    config_file = config_file or env.get("ROWFORGE_CONFIG") or None
    if config_file:
        for key, value in _read_toml(config_file).items():
            if key not in _FIELDS:
                raise ConfigError(f"{config_file}: unknown setting {key!r}{nearest(key, _FIELDS)}; "
                                  "every setting is listed in docs/config.md")
            try:
                values[key] = _coerce(key, value)
            except ValueError as exc:
                raise ConfigError(f"{config_file}: {exc}") from None
            source[key] = str(config_file)
    for name in _FIELDS:
        var = f"ROWFORGE_{name.upper()}"
        raw = env.get(var)
        if raw is not None and raw != "":
            try:
                values[name] = _coerce(name, raw)
            except ValueError as exc:
                raise ConfigError(f"{var}: {exc}") from None
            source[name] = var
    for key, value in overrides.items():
        if value is not None:
            if key not in _FIELDS:
                raise ConfigError(f"unknown setting {key!r}{nearest(key, _FIELDS)}")
            try:
                values[key] = _coerce(key, value)
            except ValueError as exc:
                raise ConfigError(f"--{key.replace('_', '-')}: {exc}") from None
            source[key] = f"--{key.replace('_', '-')}"
    try:
        settings = Settings(**values)
    except ValueError as exc:  # settings that do not fit together (__post_init__)
        raise ConfigError(str(exc)) from None
    _check_models(settings, source)
    return settings


def _read_toml(path: str | Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file; check the path given to --config or "
                          "ROWFORGE_CONFIG") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    section = data.get("rowforge", data)
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: 'rowforge' must be a table of settings")
    return _flatten_tables(section)


#: TOML tables whose keys are settings with the table's name as a prefix:
#: ``[files] backend = "s3"`` is ``files_backend = "s3"``.
_PREFIX_TABLES = ("files",)


def _flatten_tables(section: dict[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in section.items():
        if key in _PREFIX_TABLES and isinstance(value, dict):
            for sub, sub_value in value.items():
                flat[f"{key}_{sub}"] = sub_value
        else:
            flat[key] = value
    return flat


def _check_models(settings: Settings, source: dict[str, str]) -> None:
    """Refuse a ``models`` entry or default model the server could not use, at load time."""
    from rowforge.server.providers.registry import ModelRegistry

    try:
        ModelRegistry.from_config(list(settings.models), defaults={
            "chat": settings.default_chat_model, "embed": settings.default_embed_model,
            "rerank": settings.default_rerank_model})
    except ValueError as exc:
        text = str(exc)
        key = "models" if text.startswith("models[") else next(
            (k for k in ("default_chat_model", "default_embed_model", "default_rerank_model")
             if getattr(settings, k) in text), "models")
        where = source.get(key, "defaults")
        raise ConfigError(f"{where}: {text}") from None
