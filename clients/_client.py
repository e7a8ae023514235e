"""``RowForge`` (sync) and ``AsyncRowForge`` (asyncio): one connection to a rowforge server.

Both expose the same methods (defined once, see :mod:`rowforge.clients._transport`):
``client.table`` (tables, rows, knowledge search), ``client.file`` (files), ``client.batch``
(batch jobs), and the model calls on the client itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self, cast

import grpc

from rowforge.clients._files import FileClient
from rowforge.clients._models import ModelMethods
from rowforge.clients._tables import TableClient
from rowforge.clients._transport import AsyncTransport, SyncTransport, Transport
from rowforge.clients.batch_jobs import BatchClient
from rowforge.clients.config import ClientConfig, RetryConfig, TLSConfig, load_dotenv_once

if TYPE_CHECKING:
    from rowforge.clients._async_api import (
        AsyncBatchClient,
        AsyncFileClient,
        AsyncModelMethods,
        AsyncTableClient,
    )
else:
    AsyncModelMethods = ModelMethods


class _Client:
    _t: Transport

    def __init__(self, transport: Transport) -> None:
        self._t = transport

    @property
    def config(self) -> ClientConfig:
        """The resolved configuration (address, project, timeouts ...)."""
        return self._t.config

    @property
    def token(self) -> str | None:
        return self.config.token

    @property
    def project_id(self) -> str | None:
        return self.config.project_id

    @property
    def address(self) -> str:
        return self.config.address

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(address={self.address!r}, "
                f"project_id={self.project_id!r})")

    @classmethod
    def from_env(cls, *, dotenv: bool = True, **kwargs: Any) -> Self:
        """A client configured from the environment, after loading a ``.env`` file from the
        working directory or a parent (with python-dotenv; variables already set win).
        Constructing a client directly never reads ``.env``: only this does, when asked.
        Keyword arguments are the constructor's and win over both."""
        if dotenv:
            load_dotenv_once()
        return cls(**kwargs)


class _Unset:
    """The default of an option that was not given (None means "no deadline")."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET = _Unset()


def _options(config: ClientConfig, timeout: float | _Unset | None, retry: RetryConfig | None,
             metadata: Mapping[str, str] | None) -> ClientConfig:
    if not isinstance(timeout, _Unset) and timeout is not None and timeout <= 0:
        raise ValueError("timeout must be positive (None: no deadline)")
    extra = dict(config.extra_metadata)
    for key, value in (metadata or {}).items():
        if key.lower() != key or key in ("authorization", "x-project-id"):
            raise ValueError(f"metadata key {key!r}: lowercase, and not one the client sets")
        extra[key] = value
    return replace(config, timeout=config.timeout if isinstance(timeout, _Unset) else timeout,
                   retry=retry or config.retry, extra_metadata=tuple(extra.items()))


_ARGS_DOC = """
    Args:
        token: Personal access token (default ``ROWFORGE_TOKEN``, then ``JAMAI_TOKEN``).
        project_id: Project (default ``ROWFORGE_PROJECT_ID``, then ``JAMAI_PROJECT_ID``).
        address: ``host:port`` of the server (default ``ROWFORGE_ADDRESS``, then
            ``127.0.0.1:50051``); an ``https://`` prefix turns TLS on.
        timeout: Default deadline of each call in seconds (``ROWFORGE_TIMEOUT_SEC``, 300).
        file_upload_timeout: Deadline of uploads/downloads (``ROWFORGE_FILE_UPLOAD_TIMEOUT_SEC``).
        tls: ``True`` for TLS with the system roots, or a :class:`TLSConfig`.
        root_certificates: PEM bytes or a path (implies TLS).
        retry: Retries of idempotent calls on UNAVAILABLE (:class:`RetryConfig`).
        channel_options: Extra gRPC channel options.
"""


class RowForge(_Client, ModelMethods):
    """Synchronous client.

    >>> from rowforge.clients import RowForge
    >>> client = RowForge()                    # ROWFORGE_ADDRESS / _TOKEN / _PROJECT_ID
    >>> client.table.list_tables("action").items
    """

    __doc__ = (__doc__ or "") + _ARGS_DOC
    _t: SyncTransport

    def __init__(
        self,
        token: str | None = None,
        project_id: str | None = None,
        *,
        address: str | None = None,
        timeout: float | None = None,
        file_upload_timeout: float | None = None,
        tls: bool | TLSConfig | None = None,
        root_certificates: bytes | str | Path | None = None,
        retry: RetryConfig | None = None,
        channel_options: tuple[tuple[str, object], ...] = (),
        channel: grpc.Channel | None = None,
        config: ClientConfig | None = None,
    ) -> None:
        config = config or ClientConfig.resolve(
            address=address, token=token, project_id=project_id, tls=tls,
            root_certificates=root_certificates, timeout=timeout,
            file_upload_timeout=file_upload_timeout, retry=retry,
            channel_options=channel_options)
        transport = SyncTransport(config, channel)
        super().__init__(transport)
        self._t = transport
        self.file = FileClient(transport)
        self.table = TableClient(transport, self.file)
        self.batch = BatchClient(transport, self.file)

    def with_options(self, *, timeout: float | _Unset | None = UNSET,
                     retry: RetryConfig | None = None,
                     metadata: Mapping[str, str] | None = None) -> RowForge:
        """A client sharing this one's channel with another deadline (``None``: no deadline
        at all), retry policy or extra call metadata; for one call:
        ``client.with_options(timeout=5).table.get_table(...)``."""
        return RowForge(config=_options(self.config, timeout, retry, metadata),
                        channel=self._t.channel)

    def close(self) -> None:
        """Close the channel (calls in flight are cancelled)."""
        self._t.close()

    def __enter__(self) -> RowForge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncRowForge(_Client, AsyncModelMethods):
    """Asyncio client: the same methods as :class:`RowForge`, awaited; streaming methods
    return async iterators (``async for chunk in client.table.add_table_rows(...)``; awaiting
    them first works too).

    >>> async with AsyncRowForge() as client:
    ...     page = await client.table.list_tables("action")
    """

    __doc__ = (__doc__ or "") + _ARGS_DOC
    _t: AsyncTransport

    def __init__(
        self,
        token: str | None = None,
        project_id: str | None = None,
        *,
        address: str | None = None,
        timeout: float | None = None,
        file_upload_timeout: float | None = None,
        tls: bool | TLSConfig | None = None,
        root_certificates: bytes | str | Path | None = None,
        retry: RetryConfig | None = None,
        channel_options: tuple[tuple[str, object], ...] = (),
        channel: grpc.aio.Channel | None = None,
        config: ClientConfig | None = None,
    ) -> None:
        config = config or ClientConfig.resolve(
            address=address, token=token, project_id=project_id, tls=tls,
            root_certificates=root_certificates, timeout=timeout,
            file_upload_timeout=file_upload_timeout, retry=retry,
            channel_options=channel_options)
        transport = AsyncTransport(config, channel)
        super().__init__(transport)
        self._t = transport
        # The same classes as the sync client's, typed as awaitables and async iterators
        # (_async_api.pyi is generated from them).
        files = FileClient(transport)
        self.file = cast("AsyncFileClient", files)
        self.table = cast("AsyncTableClient", TableClient(transport, files))
        self.batch = cast("AsyncBatchClient", BatchClient(transport, files))

    def with_options(self, *, timeout: float | _Unset | None = UNSET,
                     retry: RetryConfig | None = None,
                     metadata: Mapping[str, str] | None = None) -> AsyncRowForge:
        """A client sharing this one's channel with another deadline (``None``: no deadline
        at all), retry policy or extra call metadata; for one call:
        ``await client.with_options(timeout=5).table.get_table(...)``."""
        return AsyncRowForge(config=_options(self.config, timeout, retry, metadata),
                             channel=self._t.channel)

    async def close(self) -> None:
        """Close the channel (calls in flight are cancelled)."""
        await self._t.close()

    async def __aenter__(self) -> AsyncRowForge:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
