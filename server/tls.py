"""TLS and mutual TLS for the server, with certificates reloaded on SIGHUP.

grpc's dynamic server credentials ask :meth:`ServerTLS._fetch` before each new handshake:
after :meth:`ServerTLS.reload` it hands over the files read again, so new connections get the
new certificate while established ones (and their calls) go on untouched.
"""

from __future__ import annotations

import logging
from pathlib import Path

import grpc

from rowforge.server.config import ConfigError, Settings

log = logging.getLogger("rowforge.server")


class ServerTLS:
    """The server's certificate, key and (for mutual TLS) client CA, from files.

    Raises:
        ConfigError: a file cannot be read or is not PEM (at construction; a failed reload
            keeps the current certificate and logs why).
    """

    def __init__(self, cert: str, key: str, client_ca: str = "") -> None:
        self.cert, self.key, self.client_ca = Path(cert), Path(key), (
            Path(client_ca) if client_ca else None)
        self._config = self._load()
        self._pending: object | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> ServerTLS | None:
        if not settings.tls_cert:
            return None
        return cls(settings.tls_cert, settings.tls_key, settings.tls_client_ca)

    @property
    def mutual(self) -> bool:
        return self.client_ca is not None

    def _read(self, path: Path, setting: str) -> bytes:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"{setting}: cannot read {path} ({exc.strerror})") from None
        if b"-----BEGIN " not in data:
            raise ConfigError(f"{setting}: {path} is not a PEM file")
        return data

    def _load(self) -> object:
        pair = (self._read(self.key, "tls_key"), self._read(self.cert, "tls_cert"))
        roots = self._read(self.client_ca, "tls_client_ca") if self.client_ca else None
        return grpc.ssl_server_certificate_configuration([pair], root_certificates=roots)

    def credentials(self) -> grpc.ServerCredentials:
        """Server credentials that pick up :meth:`reload`\\ ed files at the next handshake."""
        return grpc.dynamic_ssl_server_credentials(
            self._config, self._fetch, require_client_authentication=self.mutual)

    def _fetch(self) -> object | None:
        # Called by grpc (any thread) before a handshake: None keeps the current files.
        pending, self._pending = self._pending, None
        return pending

    def reload(self) -> bool:
        """Read the files again for the next connections; False (and an ERROR log) when they
        cannot be used, the current certificate staying in place."""
        try:
            self._pending = self._load()
        except (ConfigError, ValueError, RuntimeError) as exc:
            log.error("TLS files not reloaded, the current certificate stays: %s", exc)
            return False
        log.info("TLS files reloaded; new connections use them",
                 extra={"cert": str(self.cert), "mutual": self.mutual})
        return True
