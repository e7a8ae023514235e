"""Client configuration: arguments first, then ``ROWFORGE_*`` environment variables (and a
``.env`` file when python-dotenv is installed), then defaults.

Environment variables:

============================  =================================================================
``ROWFORGE_ADDRESS``          ``host:port`` (default ``127.0.0.1:50051``); an ``https://``
                              prefix turns TLS on, ``http://`` / ``grpc://`` are stripped
                              (``JAMAI_API_BASE`` too: a URL whose path is ignored and whose
                              port defaults to 443 for ``https``, 80 for ``http``)
``ROWFORGE_TOKEN``            personal access token, sent as ``authorization: Bearer ...``
                              (``JAMAI_TOKEN`` is accepted too)
``ROWFORGE_PROJECT_ID``       project, sent as ``x-project-id`` (``JAMAI_PROJECT_ID`` too)
``ROWFORGE_TIMEOUT_SEC``      default deadline of a call in seconds (default 300;
                              ``JAMAI_TIMEOUT_SEC`` too)
``ROWFORGE_FILE_UPLOAD_TIMEOUT_SEC``  deadline of uploads and downloads (default 900;
                              ``JAMAI_FILE_UPLOAD_TIMEOUT_SEC`` too)
``ROWFORGE_TLS``              ``true`` to use TLS with the system roots
``ROWFORGE_ROOT_CERTS``       path of a PEM bundle of root certificates (implies TLS)
``ROWFORGE_CLIENT_CERT``      path of a PEM client certificate chain, for mutual TLS (with
                              ``ROWFORGE_CLIENT_KEY``, the path of its key; implies TLS)
``ROWFORGE_MAX_RETRIES``      attempts of idempotent calls on UNAVAILABLE (default 5)
============================  =================================================================
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

__all__ = ["DEFAULT_ADDRESS", "ClientConfig", "RetryConfig", "TLSConfig", "load_dotenv_once"]

DEFAULT_ADDRESS = "127.0.0.1:50051"
DEFAULT_TIMEOUT_S = 300.0
DEFAULT_UPLOAD_TIMEOUT_S = 900.0
#: The server accepts messages up to 40 MB (a batch request may carry 32 MB of content).
MAX_MESSAGE_BYTES = 40 * 1024 * 1024

_dotenv_loaded = False


def load_dotenv_once() -> None:
    """Load ``.env`` from the working directory (or a parent) once, if python-dotenv is
    installed; variables already set win."""
    global _dotenv_loaded
    if _dotenv_loaded:
        return
    _dotenv_loaded = True
    try:
        from dotenv import find_dotenv, load_dotenv
    except ImportError:  # optional: the `client` extra installs it
        return
    path = find_dotenv(usecwd=True)
    if path:
        load_dotenv(path, override=False)


@dataclass(frozen=True)
class TLSConfig:
    """TLS settings of the channel.

    Attributes:
        root_certificates: PEM root certificates (``None``: the system's roots).
        private_key: PEM client key for mutual TLS.
        certificate_chain: PEM client certificate chain for mutual TLS.
        server_name: Override of the name checked against the server's certificate.
    """

    root_certificates: bytes | None = None
    private_key: bytes | None = None
    certificate_chain: bytes | None = None
    server_name: str | None = None


@dataclass(frozen=True)
class RetryConfig:
    """Retries of idempotent calls (Get/List/Export/Download...) on UNAVAILABLE.

    Attributes:
        max_attempts: Attempts in all, first included (1 disables retries).
        initial_backoff: Seconds before the first retry.
        max_backoff: Cap of one wait.
        multiplier: Growth of the wait per attempt.
        jitter: Random +/- fraction of each wait, so clients do not retry in lockstep.
    """

    max_attempts: int = 5
    initial_backoff: float = 0.2
    max_backoff: float = 5.0
    multiplier: float = 2.0
    jitter: float = 0.2

    def backoff(self, attempt: int, server_hint: float | None = None) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based); a server ``RetryInfo``
        hint is honoured when longer."""
        import random

        wait = min(self.max_backoff, self.initial_backoff * self.multiplier ** (attempt - 1))
        wait *= 1.0 + random.uniform(-self.jitter, self.jitter)
        if server_hint is not None:
            # The server knows best; the call's deadline still bounds the wait.
            wait = max(wait, server_hint)
        return max(wait, 0.0)


@dataclass(frozen=True)
class ClientConfig:
    """Everything a client needs to reach the server.

    Build it with :meth:`resolve` (arguments, then environment, then defaults).
    """

    address: str = DEFAULT_ADDRESS
    token: str | None = None
    project_id: str | None = None
    tls: TLSConfig | None = None
    timeout: float | None = DEFAULT_TIMEOUT_S
    file_upload_timeout: float | None = DEFAULT_UPLOAD_TIMEOUT_S
    retry: RetryConfig = field(default_factory=RetryConfig)
    #: Extra gRPC channel options, e.g. ``[("grpc.keepalive_time_ms", 30000)]``.
    channel_options: tuple[tuple[str, object], ...] = ()
    #: Extra call metadata sent with every call (``with_options(metadata=...)``).
    extra_metadata: tuple[tuple[str, str], ...] = ()

    @classmethod
    def resolve(
        cls,
        *,
        address: str | None = None,
        token: str | None = None,
        project_id: str | None = None,
        tls: bool | TLSConfig | None = None,
        root_certificates: bytes | str | Path | None = None,
        timeout: float | None = None,
        file_upload_timeout: float | None = None,
        retry: RetryConfig | None = None,
        channel_options: tuple[tuple[str, object], ...] = (),
        env: Mapping[str, str] | None = None,
        token_env: tuple[str, ...] = ("ROWFORGE_TOKEN", "JAMAI_TOKEN"),
    ) -> ClientConfig:
        """Arguments win over the environment, which wins over the defaults.

        Raises:
            ValueError: a malformed address, timeout or retry count, naming the variable.
        """
        if env is None:
            env = os.environ  # .env files only when asked: RowForge.from_env(), the CLI
        if not address and not env.get("ROWFORGE_ADDRESS") and env.get("JAMAI_API_BASE"):
            address = _api_base_address(env["JAMAI_API_BASE"])
        address = address or env.get("ROWFORGE_ADDRESS") or DEFAULT_ADDRESS
        address, scheme_tls = _split_address(address)
        token = token or next((env[k] for k in token_env if env.get(k)), None)
        project_id = (project_id or env.get("ROWFORGE_PROJECT_ID")
                      or env.get("JAMAI_PROJECT_ID") or None)
        if root_certificates is None and env.get("ROWFORGE_ROOT_CERTS"):
            root_certificates = Path(env["ROWFORGE_ROOT_CERTS"])
        if isinstance(root_certificates, (str, Path)):
            root_certificates = Path(root_certificates).expanduser().read_bytes()
        client_cert = client_key = None
        if env.get("ROWFORGE_CLIENT_CERT") or env.get("ROWFORGE_CLIENT_KEY"):
            if not (env.get("ROWFORGE_CLIENT_CERT") and env.get("ROWFORGE_CLIENT_KEY")):
                raise ValueError("ROWFORGE_CLIENT_CERT and ROWFORGE_CLIENT_KEY: set both (a "
                                 "client certificate chain and its key) or neither")
            client_cert = Path(env["ROWFORGE_CLIENT_CERT"]).expanduser().read_bytes()
            client_key = Path(env["ROWFORGE_CLIENT_KEY"]).expanduser().read_bytes()
        tls_config: TLSConfig | None
        if isinstance(tls, TLSConfig):
            tls_config = tls
        elif tls is None:
            wanted = (scheme_tls or root_certificates is not None or client_cert is not None
                      or _env_bool(env, "ROWFORGE_TLS"))
            tls_config = TLSConfig(root_certificates=root_certificates, private_key=client_key,
                                   certificate_chain=client_cert) if wanted else None
        else:
            tls_config = TLSConfig(root_certificates=root_certificates, private_key=client_key,
                                   certificate_chain=client_cert) if tls else None
        if timeout is None:
            timeout = _env_float(env, ("ROWFORGE_TIMEOUT_SEC", "JAMAI_TIMEOUT_SEC"),
                                 DEFAULT_TIMEOUT_S)
        if file_upload_timeout is None:
            file_upload_timeout = _env_float(
                env, ("ROWFORGE_FILE_UPLOAD_TIMEOUT_SEC", "JAMAI_FILE_UPLOAD_TIMEOUT_SEC"),
                DEFAULT_UPLOAD_TIMEOUT_S)
        if retry is None:
            attempts = env.get("ROWFORGE_MAX_RETRIES")
            retry = RetryConfig()
            if attempts:
                try:
                    retry = replace(retry, max_attempts=max(1, int(attempts)))
                except ValueError:
                    raise ValueError(f"ROWFORGE_MAX_RETRIES: expected an integer, "
                                     f"got {attempts!r}") from None
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout must be positive (or None for no deadline)")
        if file_upload_timeout is not None and file_upload_timeout <= 0:
            raise ValueError("file_upload_timeout must be positive (or None for no deadline)")
        return cls(address=address, token=token, project_id=project_id, tls=tls_config,
                   timeout=timeout, file_upload_timeout=file_upload_timeout, retry=retry,
                   channel_options=tuple(channel_options))

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """Call metadata: the Bearer token and the project."""
        out = []
        if self.token:
            out.append(("authorization", f"Bearer {self.token}"))
        if self.project_id:
            out.append(("x-project-id", self.project_id))
        return (*out, *self.extra_metadata)

    def grpc_options(self) -> list[tuple[str, object]]:
        from rowforge.clients._version import __version__

        options: list[tuple[str, object]] = [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.primary_user_agent", f"rowforge-python/{__version__}"),
            ("grpc.keepalive_time_ms", 60_000),
            ("grpc.keepalive_timeout_ms", 20_000),
            # Our own retries handle UNAVAILABLE for idempotent calls only (AIP-194).
            ("grpc.enable_retries", 0),
        ]
        if self.tls and self.tls.server_name:
            options.append(("grpc.ssl_target_name_override", self.tls.server_name))
        options.extend(self.channel_options)
        return options


def _split_address(address: str) -> tuple[str, bool]:
    address = address.strip()
    tls = False
    for prefix, is_tls in (("https://", True), ("http://", False), ("grpcs://", True),
                           ("grpc://", False)):
        if address.startswith(prefix):
            address, tls = address[len(prefix):], is_tls
            break
    address = address.rstrip("/")
    if not address or "/" in address:
        raise ValueError(f"address must be host:port, got {address!r}")
    return address, tls


def _env_bool(env: Mapping[str, str], name: str) -> bool:
    value = env.get(name, "").strip().lower()
    if value in {"", "0", "false", "no", "off"}:
        return False
    if value in {"1", "true", "yes", "on"}:
        return True
    raise ValueError(f"{name}: expected a boolean, got {value!r}")


def _api_base_address(api_base: str) -> str:
    """``JAMAI_API_BASE`` (an HTTP base URL such as ``https://api.example.com/api``) as an
    address: scheme and ``host:port`` kept, the REST path dropped (gRPC has no use for it)."""
    url = urlsplit(api_base.strip() if "://" in api_base else f"http://{api_base.strip()}")
    if url.scheme not in {"http", "https", "grpc", "grpcs"} or not url.hostname:
        raise ValueError(f"JAMAI_API_BASE: expected an http(s) URL, got {api_base!r}")
    try:
        port = url.port or (443 if url.scheme in {"https", "grpcs"} else 80)
    except ValueError:
        raise ValueError(f"JAMAI_API_BASE: bad port in {api_base!r}") from None
    host = f"[{url.hostname}]" if ":" in url.hostname else url.hostname
    return f"{url.scheme}://{host}:{port}"


def _env_float(env: Mapping[str, str], names: tuple[str, ...], default: float) -> float:
    name = next((n for n in names if env.get(n)), None)
    if name is None:
        return default
    raw = env[name]
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name}: expected a number of seconds, got {raw!r}") from None
