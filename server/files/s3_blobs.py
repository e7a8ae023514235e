"""Blobs in an S3-compatible object store (``files_backend = "s3"``), for replicas on several
machines.

Same guarantees as :class:`~rowforge.server.files.blobs.LocalBlobStore`:

* **content-addressed**: ``<prefix>blobs/<sha[:2]>/<sha>``;
* **visible only once complete**: a file that fits in one part (``files_part_mb``) is kept in
  memory while it is hashed and put under its final key in one ``PutObject`` at commit; a
  larger one goes up as a multipart upload to ``<prefix>tmp/up-<host>-<pid>-<random>``,
  part by part as it arrives (at most two parts in memory: one being sent, one filling),
  and is copied to its final key by the store itself (``CopyObject``) once complete and
  hashed. S3 makes an object visible only when its PUT, multipart completion or copy has
  succeeded, so a reader never sees a partial blob;
* **nothing left behind**: a failed or cancelled upload aborts its multipart upload or
  deletes its temporary object (in the background: :meth:`BlobWriter.discard` is
  synchronous); on start, temporary objects and multipart uploads of a dead process of this
  host, or older than ``stale_after_s``, are removed (a bucket lifecycle rule on ``tmp/``
  is a good second net, see deploy/README.md);
* **ranged reads**: ``GetObject`` with a ``Range`` header, streamed in chunks;
* **deletes serialised cluster-wide**: :meth:`guard` holds a database advisory lock (see
  :meth:`Database.advisory_lock`) as well as an in-process lock, so one replica never deletes
  a blob another replica is recording a new file for.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import logging
import os
import re
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from rowforge.server import leftovers
from rowforge.server.errors import Unavailable
from rowforge.server.files.blobs import CHUNK_BYTES, _check_sha

log = logging.getLogger("rowforge.files")

MiB = 1024 * 1024
COPY_LIMIT = 5 * 1024 * MiB
"""Largest object one ``CopyObject`` copies (S3's limit); file limits stay below it."""

_TMP_RE = re.compile(rf"up-{leftovers.OWNER}-[0-9a-f]{{16}}")
_MISSING = {"NoSuchKey", "404", "NotFound", "NoSuchUpload"}

Locker = Callable[[str], AbstractAsyncContextManager[None]]


def _code(exc: BaseException) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


def _unavailable(exc: Exception) -> Unavailable:
    return Unavailable(f"the file store (S3) failed: {exc}", reason="BLOB_STORE_UNAVAILABLE",
                       retry_after=1.0)


class S3BlobWriter:
    """One upload: hashed as it arrives; parts of ``part_size`` go up as they fill."""

    def __init__(self, store: S3BlobStore, key: str) -> None:
        self._store = store
        self.key = key
        self._hash = hashlib.sha256()
        self._size = 0
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []
        self._pending: asyncio.Task[None] | None = None
        self._closed = False
        self._committed = False
        self.digest = ""
        self.data: bytes | None = None  # the content when it fits in one part

    @property
    def size(self) -> int:
        return self._size

    @property
    def multipart(self) -> bool:
        return self._upload_id is not None

    async def write(self, data: bytes) -> None:
        if self._closed:
            raise RuntimeError("write after finish/discard")
        self._hash.update(data)
        self._size += len(data)
        self._buffer += data
        part_size = self._store.part_size
        while len(self._buffer) >= part_size:
            part = bytes(self._buffer[:part_size])
            del self._buffer[:part_size]
            await self._send(part)

    async def _send(self, part: bytes) -> None:
        """Upload ``part`` in the background once the previous one is done (one in flight)."""
        await self._drain()
        if self._upload_id is None:
            self._upload_id = await self._store._create_multipart(self.key)
        number = len(self._parts) + 1
        self._parts.append({"PartNumber": number})
        self._pending = asyncio.create_task(self._upload_part(number, part))

    async def _upload_part(self, number: int, part: bytes) -> None:
        assert self._upload_id is not None
        etag = await self._store._upload_part(self.key, self._upload_id, number, part)
        self._parts[number - 1]["ETag"] = etag

    async def _drain(self) -> None:
        task = self._pending
        if task is not None:
            # shield: a cancelled upload leaves the part request to finish; discard() aborts
            # the whole multipart upload after it.
            await asyncio.shield(task)
            self._pending = None

    async def finish(self) -> str:
        if self._upload_id is not None:
            if self._buffer:
                await self._send(bytes(self._buffer))
                self._buffer.clear()
            await self._drain()
            await self._store._complete_multipart(self.key, self._upload_id, self._parts)
        else:
            self.data = bytes(self._buffer)
            self._buffer = bytearray()
        self._closed = True
        self.digest = self._hash.hexdigest()
        return self.digest

    def mark_committed(self) -> None:
        self._committed = True
        self.data = None

    def discard(self) -> None:
        self._closed = True
        self._buffer = bytearray()
        self.data = None
        if self._committed or self._upload_id is None:
            return  # nothing in the store (or the commit already removed it)
        self._committed = True  # idempotent
        self._store._clean_later(self.key, self._upload_id, self._pending)


class S3BlobStore:
    """:class:`~rowforge.server.files.blobs.BlobStore` in an S3 bucket.

    Args:
        bucket: The bucket (it must exist).
        prefix: Prepended to every key.
        endpoint_url: An S3-compatible endpoint; empty for AWS.
        region: The bucket's region; empty for the environment's.
        part_size: Multipart part size in bytes (at least 5 MiB, S3's minimum).
        stale_after_s: Temporary objects and multipart uploads older than this are swept
            on start.
        locker: A cluster-wide lock by name (the database's advisory lock).
    """

    def __init__(self, bucket: str, *, prefix: str = "", endpoint_url: str = "",
                 region: str = "", part_size: int = 8 * MiB, stale_after_s: float = 3600.0,
                 locker: Locker | None = None) -> None:
        if part_size < 5 * MiB:
            raise ValueError("S3 parts are at least 5 MiB")
        self.bucket = bucket
        self.prefix = prefix
        self.endpoint_url = endpoint_url
        self.region = region
        self.part_size = part_size
        self.stale_after_s = stale_after_s
        self._locker = locker
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary())
        # A guard holds a database connection for its lock while the caller writes through
        # another: bounded, so concurrent uploads can never take the whole pool and wait on it.
        self._shared_slots = asyncio.Semaphore(8)
        self._client: Any = None
        self._exit: contextlib.AsyncExitStack | None = None
        self._cleanups: set[asyncio.Task[None]] = set()

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        from aiobotocore.config import AioConfig
        from aiobotocore.session import get_session

        config = AioConfig(
            max_pool_connections=64, connect_timeout=10, read_timeout=60,
            retries={"max_attempts": 5, "mode": "standard"},
            # Endpoints of S3-compatible stores rarely resolve bucket subdomains.
            s3={"addressing_style": "path" if self.endpoint_url else "auto"})
        self._exit = contextlib.AsyncExitStack()
        self._client = await self._exit.enter_async_context(get_session().create_client(
            "s3", region_name=self.region or os.environ.get("AWS_REGION")
            or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
            endpoint_url=self.endpoint_url or None, config=config))
        try:
            await self._client.head_bucket(Bucket=self.bucket)
        except Exception as exc:
            await self.close()
            raise RuntimeError(f"files_bucket {self.bucket!r} is not usable: {exc}") from exc
        removed = await self.sweep_temporary(starting=True)
        if removed:
            log.info("removed %d leftover partial uploads from the object store", removed)

    async def close(self) -> None:
        """Wait for the background clean-ups, then close the client."""
        if self._cleanups:
            await asyncio.gather(*self._cleanups, return_exceptions=True)
        if self._exit is not None:
            await self._exit.aclose()
            self._exit = None
            self._client = None

    # --- keys ------------------------------------------------------------------------------

    def key_for(self, sha256: str) -> str:
        """The key of the blob ``sha256`` (the hash is checked)."""
        _check_sha(sha256)
        return f"{self.prefix}blobs/{sha256[:2]}/{sha256}"

    @property
    def tmp_prefix(self) -> str:
        return f"{self.prefix}tmp/"

    # --- uploads ---------------------------------------------------------------------------

    def open_write(self) -> S3BlobWriter:
        return S3BlobWriter(self, f"{self.tmp_prefix}up-{leftovers.owner_tag()}-"
                                  f"{os.urandom(8).hex()}")

    async def _create_multipart(self, key: str) -> str:
        try:
            reply = await self._client.create_multipart_upload(Bucket=self.bucket, Key=key)
        except Exception as exc:
            raise _unavailable(exc) from exc
        return str(reply["UploadId"])

    async def _upload_part(self, key: str, upload_id: str, number: int, data: bytes) -> str:
        try:
            reply = await self._client.upload_part(Bucket=self.bucket, Key=key,
                                                   UploadId=upload_id, PartNumber=number,
                                                   Body=data)
        except Exception as exc:
            raise _unavailable(exc) from exc
        return str(reply["ETag"])

    async def _complete_multipart(self, key: str, upload_id: str,
                                  parts: list[dict[str, Any]]) -> None:
        try:
            await self._client.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id,
                MultipartUpload={"Parts": parts})
        except Exception as exc:
            raise _unavailable(exc) from exc

    def _clean_later(self, key: str, upload_id: str,
                     pending: asyncio.Task[None] | None) -> None:
        """Abort the multipart upload ``upload_id`` and delete ``key``, in the background
        (after the part request in flight, if any)."""

        async def clean() -> None:
            if pending is not None:
                with contextlib.suppress(BaseException):
                    await pending
            try:
                with contextlib.suppress(Exception):
                    await self._client.abort_multipart_upload(
                        Bucket=self.bucket, Key=key, UploadId=upload_id)
                await self._client.delete_object(Bucket=self.bucket, Key=key)
            except Exception:
                log.warning("could not remove the partial upload %s (swept on a later start)",
                            key, exc_info=True)

        try:
            task = asyncio.get_running_loop().create_task(clean())
        except RuntimeError:  # no loop any more: the start-up sweep removes it
            return
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)

    async def commit(self, writer: Any, sha256: str) -> bool:
        if not isinstance(writer, S3BlobWriter) or writer.digest != sha256:
            raise ValueError("commit needs a finished writer of this store with that digest")
        key = self.key_for(sha256)
        try:
            if await self.exists(sha256):
                created = False
            elif writer.multipart:
                if writer.size > COPY_LIMIT:
                    raise ValueError(f"S3 copies objects of at most {COPY_LIMIT} bytes")
                await self._client.copy_object(
                    Bucket=self.bucket, Key=key,
                    CopySource={"Bucket": self.bucket, "Key": writer.key})
                created = True
            else:
                assert writer.data is not None
                await self._client.put_object(Bucket=self.bucket, Key=key, Body=writer.data)
                created = True
            if writer.multipart:
                await self._client.delete_object(Bucket=self.bucket, Key=writer.key)
        except (ValueError, AssertionError, Unavailable):
            raise
        except Exception as exc:
            raise _unavailable(exc) from exc
        writer.mark_committed()
        return created

    # --- reads and deletes -----------------------------------------------------------------

    async def open_range(self, sha256: str, offset: int = 0, length: int | None = None, *,
                         chunk_size: int = CHUNK_BYTES) -> AsyncIterator[bytes]:
        key = self.key_for(sha256)
        if length == 0:
            return
        end = "" if length is None else str(offset + length - 1)
        try:
            reply = await self._client.get_object(Bucket=self.bucket, Key=key,
                                                  Range=f"bytes={offset}-{end}")
        except Exception as exc:
            if _code(exc) in _MISSING:
                raise FileNotFoundError(key) from None
            if _code(exc) == "InvalidRange":  # offset at or past the end
                return
            raise _unavailable(exc) from exc
        body = reply["Body"]
        try:
            while True:
                try:
                    data = await body.read(chunk_size)
                except Exception as exc:
                    raise _unavailable(exc) from exc
                if not data:
                    break
                yield data
        finally:
            body.close()

    async def delete(self, sha256: str) -> None:
        try:
            await self._client.delete_object(Bucket=self.bucket, Key=self.key_for(sha256))
        except Exception as exc:
            if _code(exc) not in _MISSING:
                raise _unavailable(exc) from exc

    async def exists(self, sha256: str) -> bool:
        try:
            await self._client.head_object(Bucket=self.bucket, Key=self.key_for(sha256))
        except Exception as exc:
            if _code(exc) in _MISSING:
                return False
            raise _unavailable(exc) from exc
        return True

    @contextlib.asynccontextmanager
    async def guard(self, sha256: str) -> AsyncIterator[None]:
        _check_sha(sha256)
        lock = self._locks.get(sha256)
        if lock is None:
            lock = self._locks[sha256] = asyncio.Lock()
        async with lock:
            if self._locker is None:
                yield
                return
            async with self._shared_slots, self._locker(f"rowforge.blob.{sha256}"):
                yield

    # --- leftovers -------------------------------------------------------------------------

    async def sweep_temporary(self, *, older_than_s: float | None = None,
                              starting: bool = False) -> int:
        """Abort multipart uploads and delete temporary objects of a dead process of this
        host (see :func:`leftovers.owner_gone`), or older than ``older_than_s`` (default
        ``stale_after_s``): other replicas' uploads in progress are left alone."""
        limit = dt.datetime.now(dt.UTC) - dt.timedelta(
            seconds=self.stale_after_s if older_than_s is None else older_than_s)

        def leftover(key: str, when: dt.datetime) -> bool:
            match = _TMP_RE.fullmatch(key[len(self.tmp_prefix):])
            return bool(match and leftovers.owner_gone(match, starting=starting)) or when <= limit

        removed = 0
        try:
            paginator = self._client.get_paginator("list_multipart_uploads")
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=self.tmp_prefix):
                for upload in page.get("Uploads", []):
                    if leftover(upload["Key"], upload["Initiated"]):
                        with contextlib.suppress(Exception):
                            await self._client.abort_multipart_upload(
                                Bucket=self.bucket, Key=upload["Key"],
                                UploadId=upload["UploadId"])
                            removed += 1
            paginator = self._client.get_paginator("list_objects_v2")
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=self.tmp_prefix):
                for obj in page.get("Contents", []):
                    if leftover(obj["Key"], obj["LastModified"]):
                        await self._client.delete_object(Bucket=self.bucket, Key=obj["Key"])
                        removed += 1
        except Exception:
            log.warning("could not sweep partial uploads from the object store",
                        exc_info=True)
        return removed
