"""Content-addressed blob storage: the :class:`BlobStore` interface and its local-directory form.

A blob is named by the SHA-256 of its bytes, so identical uploads share one blob whatever
project they belong to (visibility is decided by the metadata rows, not here). Uploads are
written to a temporary file while they are hashed, fsync'd, then linked into place atomically:
a blob path only ever holds complete, verified content.

Layout of :class:`LocalBlobStore` under its root (``<data_dir>/files``)::

    blobs/<sha[:2]>/<sha>   the content
    tmp/up-<host>-<pid>-*.part  uploads in progress (removed on any failure; on start, those
                            of a dead writer are removed, other ones once stale)
    locks/<sha[:2]>.lock    advisory locks serialising commit/delete of one content hash
                            across processes sharing the directory
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import re
import time
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, Protocol

from rowforge.server import leftovers
from rowforge.server.errors import ResourceExhausted

log = logging.getLogger("rowforge.files")

CHUNK_BYTES = 1024 * 1024
"""Default size of the chunks :meth:`BlobStore.open_range` yields."""

_SHA_RE = re.compile(r"[0-9a-f]{64}")
_PART_RE = re.compile(rf"up-{leftovers.OWNER}-[0-9a-f]{{16}}\.part")
_LOCK_POLL_S = 0.005


class BlobWriter(Protocol):
    """An upload in progress: bytes go to temporary storage while they are hashed."""

    @property
    def size(self) -> int:
        """Bytes written so far."""
        ...

    async def write(self, data: bytes) -> None:
        """Append ``data`` (may return before it reaches the disk; :meth:`finish` waits)."""
        ...

    async def finish(self) -> str:
        """Flush and sync everything; return the SHA-256 (hex) of the content."""
        ...

    def discard(self) -> None:
        """Drop the temporary data. Synchronous so it also runs in a cancelled task;
        idempotent; a no-op after a successful :meth:`BlobStore.commit`."""
        ...


class BlobStore(Protocol):
    """Where file content lives: a local directory by default (:class:`LocalBlobStore`), an
    S3-compatible object store for replicas on several machines
    (:class:`~rowforge.server.files.s3_blobs.S3BlobStore`)."""

    async def start(self) -> None:
        """Prepare the storage and drop leftovers of interrupted uploads."""
        ...

    async def close(self) -> None:
        """Finish background clean-ups and release connections."""
        ...

    def open_write(self) -> BlobWriter:
        """Start a new upload into temporary storage."""
        ...

    async def commit(self, writer: BlobWriter, sha256: str) -> bool:
        """Make a finished upload the blob ``sha256``; return True if the blob is new (False
        when identical content was already stored: the upload is then dropped)."""
        ...

    def open_range(self, sha256: str, offset: int = 0, length: int | None = None, *,
                   chunk_size: int = CHUNK_BYTES) -> AsyncIterator[bytes]:
        """Yield the bytes ``[offset, offset + length)`` of a blob in chunks.

        Raises:
            FileNotFoundError: no such blob.
        """
        ...

    async def delete(self, sha256: str) -> None:
        """Remove a blob (no error if it is already gone)."""
        ...

    async def exists(self, sha256: str) -> bool:
        ...

    def guard(self, sha256: str) -> AbstractAsyncContextManager[None]:
        """Serialise decisions about one blob (commit + record, unreference + delete), so a
        blob is never deleted while an upload of the same content is being recorded."""
        ...


def _check_sha(sha256: str) -> str:
    # Hashes come from our own hashing, but a path is only ever built from a verified one.
    if not _SHA_RE.fullmatch(sha256):
        raise ValueError(f"not a SHA-256 hex digest: {sha256[:80]!r}")
    return sha256


def _retrieve(fut: asyncio.Future[Any]) -> None:
    """Mark a background result as seen (its awaiting task may have been cancelled)."""
    if not fut.cancelled():
        fut.exception()


def _after(fut: asyncio.Future[Any] | None, action: Callable[[], None]) -> None:
    """Run ``action`` now, or once the thread behind ``fut`` is done with the file."""
    if fut is None or fut.done():
        action()
    else:
        fut.add_done_callback(lambda _f: action())


def _storage_error(exc: OSError) -> Exception:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return ResourceExhausted("file storage is full; try again later or free some space",
                                 reason="STORAGE_FULL", retry_after=60.0)
    return exc


class LocalBlobWriter:
    """A temporary file under ``tmp/``, hashed as it is written.

    Writes run in a worker thread, one at a time, overlapping the next network read; at most
    one chunk is in flight, so memory stays flat. If the task is cancelled mid-write the
    thread finishes its write on the (already unlinked) file and the descriptor is closed
    after it.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        self._hash = hashlib.sha256()
        self._size = 0
        self._pending: asyncio.Future[None] | None = None
        self._closed = False
        self.digest = ""

    @property
    def size(self) -> int:
        return self._size

    async def write(self, data: bytes) -> None:
        if self._closed:
            raise RuntimeError("write after finish/discard")
        await self._drain()
        self._size += len(data)
        fut = asyncio.get_running_loop().run_in_executor(None, self._write_sync, data)
        fut.add_done_callback(_retrieve)
        self._pending = fut

    def _write_sync(self, data: bytes) -> None:
        self._hash.update(data)
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]

    async def _drain(self) -> None:
        fut = self._pending
        if fut is None:
            return
        try:
            # shield: if we are cancelled, the thread's future stays alive and discard()
            # closes the descriptor only once the thread is done with it.
            await asyncio.shield(fut)
        except OSError as exc:
            raise _storage_error(exc) from exc
        self._pending = None

    async def finish(self) -> str:
        await self._drain()
        fut = asyncio.get_running_loop().run_in_executor(None, os.fsync, self._fd)
        fut.add_done_callback(_retrieve)
        self._pending = fut
        await self._drain()
        self._close()
        self.digest = self._hash.hexdigest()
        return self.digest

    def _close(self) -> None:
        if not self._closed:
            self._closed = True
            os.close(self._fd)

    def discard(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        _after(self._pending, self._close)


class LocalBlobStore:
    """:class:`BlobStore` in a local directory (see the module docstring for the layout).

    Args:
        root: The directory (``<data_dir>/files``).
        stale_after_s: Temporary files untouched this long belong to dead uploads (live ones
            are written at least once per upload idle timeout) and are swept on start.
    """

    def __init__(self, root: Path, *, stale_after_s: float = 3600.0) -> None:
        self.root = root
        self.blob_dir = root / "blobs"
        self.tmp_dir = root / "tmp"
        self.lock_dir = root / "locks"
        self.stale_after_s = stale_after_s
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary())

    async def start(self) -> None:
        await asyncio.to_thread(self._prepare)

    def _prepare(self) -> None:
        for directory in (self.root, self.blob_dir, self.tmp_dir, self.lock_dir):
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        removed = self.sweep_temporary(starting=True)
        if removed:
            log.info("removed %d leftover partial uploads", removed)

    async def close(self) -> None:
        pass

    def sweep_temporary(self, *, older_than_s: float | None = None,
                        starting: bool = False) -> int:
        """Delete partial uploads whose writer process is gone, and temporary files untouched
        for ``older_than_s`` (default ``stale_after_s``).

        Args:
            starting: No upload of this process exists yet (see :func:`leftovers.owner_gone`).
        """
        limit = time.time() - (self.stale_after_s if older_than_s is None else older_than_s)
        removed = 0
        for entry in os.scandir(self.tmp_dir):
            with contextlib.suppress(FileNotFoundError):
                if not entry.is_file(follow_symlinks=False):
                    continue
                match = _PART_RE.fullmatch(entry.name)
                if ((match and leftovers.owner_gone(match, starting=starting))
                        or entry.stat().st_mtime <= limit):
                    os.unlink(entry.path)
                    removed += 1
        return removed

    def path_for(self, sha256: str) -> Path:
        """Where the blob ``sha256`` lives (the hash is checked, never taken from users)."""
        _check_sha(sha256)
        return self.blob_dir / sha256[:2] / sha256

    def open_write(self) -> LocalBlobWriter:
        name = f"up-{leftovers.owner_tag()}-{os.urandom(8).hex()}.part"
        try:
            return LocalBlobWriter(self.tmp_dir / name)
        except OSError as exc:
            raise _storage_error(exc) from exc

    async def commit(self, writer: BlobWriter, sha256: str) -> bool:
        if not isinstance(writer, LocalBlobWriter) or writer.digest != sha256:
            raise ValueError("commit needs a finished writer of this store with that digest")
        try:
            return await asyncio.to_thread(self._commit_sync, writer.path, sha256)
        except OSError as exc:
            raise _storage_error(exc) from exc

    def _commit_sync(self, temp: Path, sha256: str) -> bool:
        target = self.path_for(sha256)
        target.parent.mkdir(mode=0o700, exist_ok=True)
        try:
            # link (not rename) fails if the blob exists, so a blob never changes inode under
            # a reader; equal hashes mean equal content.
            os.link(temp, target)
            created = True
        except FileExistsError:
            created = False
        os.unlink(temp)
        if created:
            _fsync_dir(target.parent)
        return created

    async def open_range(self, sha256: str, offset: int = 0, length: int | None = None, *,
                         chunk_size: int = CHUNK_BYTES) -> AsyncIterator[bytes]:
        path = self.path_for(sha256)
        fd = await asyncio.to_thread(os.open, path, os.O_RDONLY | os.O_CLOEXEC)
        loop = asyncio.get_running_loop()
        pending: asyncio.Future[bytes] | None = None
        position = offset
        remaining = length if length is not None else -1

        def read_next() -> asyncio.Future[bytes] | None:
            size = chunk_size if remaining < 0 else min(chunk_size, remaining)
            if size == 0:
                return None
            # pread: positional, so a read in flight never depends on shared seek state.
            fut = loop.run_in_executor(None, os.pread, fd, size, position)
            fut.add_done_callback(_retrieve)
            return fut

        try:
            pending = read_next()
            while pending is not None:
                data = await asyncio.shield(pending)
                if not data:
                    break
                position += len(data)
                if remaining > 0:
                    remaining -= len(data)
                # Read ahead while the caller sends this chunk: two chunks in memory at most.
                pending = read_next()
                yield data
        finally:
            _after(pending, lambda: os.close(fd))

    async def delete(self, sha256: str) -> None:
        path = self.path_for(sha256)

        def unlink() -> None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

        await asyncio.to_thread(unlink)

    async def exists(self, sha256: str) -> bool:
        return self.path_for(sha256).is_file()

    @contextlib.asynccontextmanager
    async def guard(self, sha256: str) -> AsyncIterator[None]:
        _check_sha(sha256)
        lock = self._locks.get(sha256)
        if lock is None:
            lock = self._locks[sha256] = asyncio.Lock()
        async with lock:
            fd = os.open(self.lock_dir / f"{sha256[:2]}.lock",
                         os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                # Polled, not blocking in a thread: a cancelled waiter must not end up
                # holding the lock with nobody to release it.
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        await asyncio.sleep(_LOCK_POLL_S)
                yield
            finally:
                os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
