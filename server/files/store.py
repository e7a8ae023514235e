"""The files domain: uploads, metadata, reads, deletion and thumbnails (no protobuf here).

Other domains get the one :class:`FileStore` from the composition root (``server/app.py``):

* ``await files.get(project_id, uri)`` -> :class:`FileInfo` (``NotFound`` for unknown URIs
  *and* other projects' URIs: projects cannot probe each other);
* ``await files.validate_uri(project_id, uri, dtype)`` for ``file``/``image``/``audio`` cells;
* ``await files.read_bytes(project_id, uri, max_bytes=None)`` and ``await
  files.read_for_model(project_id, uri)`` (within the limit of the file's kind);
* ``await files.store_bytes(project_id, data, name=..., expected_kind=...)`` when a Python
  column outputs bytes;
* ``async with files.receive(project_id, parts, keep_content=True) as received:`` an upload
  checked like any other but not yet a file, for work that must succeed before the file is
  kept (EmbedFileContent): ``await received.commit()``, or leave the block to drop it;
* ``await files.open_range(project_id, uri, offset, length)`` -> :class:`FileRange`, iterated
  for chunks.

Deleting a file asks every reference finder (``add_reference_finder``: the domains that store
URIs) who still uses it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import builtins
import contextlib
import datetime as dt
import hashlib
import json
import re
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from rowforge.server.config import Settings
from rowforge.server.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    Violations,
)
from rowforge.server.files import names, thumbnails
from rowforge.server.files.blobs import CHUNK_BYTES, BlobStore, BlobWriter
from rowforge.server.files.sniff import SNIFF_BYTES, Kind, Sniffed, sniff
from rowforge.server.quotas import NO_QUOTAS, Quotas
from rowforge.server.storage.db import Database
from rowforge.server.storage.files_tables import files as files_table

ReferenceFinder = Callable[[str, str], Awaitable[list[str]]]
"""``(project_id, uri) -> names of the things (tables) that reference the file``."""

MAX_LIST_LIMIT = 100
_SHA_HEX_RE = re.compile(r"[0-9a-fA-F]{64}")
_DTYPE_KINDS: dict[str, Kind | None] = {"file": None, "image": "image", "audio": "audio"}
_MiB = 1024 * 1024


@dataclass(frozen=True)
class FileInfo:
    """A stored file, as other domains see it."""

    uri: str
    id: str
    project_id: str
    name: str
    content_type: str
    size: int
    sha256: str
    kind: Kind
    create_time: dt.datetime


@dataclass(frozen=True)
class UploadMetadata:
    """What an upload declares before its bytes (``size``/``sha256`` are checked when set)."""

    name: str
    content_type: str = ""
    size: int = 0
    sha256: str = ""


@dataclass(frozen=True)
class Limits:
    """Largest file per kind, in bytes."""

    document: int
    image: int
    audio: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(settings.max_document_bytes, settings.max_image_bytes,
                   settings.max_audio_bytes)

    def for_kind(self, kind: Kind) -> int:
        return int(getattr(self, kind))

    @property
    def largest(self) -> int:
        return max(self.document, self.image, self.audio)


@dataclass(frozen=True)
class FilePage:
    """One page of :meth:`FileStore.list`."""

    items: list[FileInfo]
    next_page_token: str
    total: int


@dataclass
class FileRange:
    """A validated byte range of a file; iterate it for chunks (at most ``CHUNK_BYTES``)."""

    file: FileInfo
    offset: int
    length: int
    _blobs: BlobStore

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        sent = 0
        try:
            async for chunk in self._blobs.open_range(self.file.sha256, self.offset,
                                                      self.length):
                sent += len(chunk)
                yield chunk
        except FileNotFoundError:
            raise _missing_blob(self.file) from None
        if sent != self.length:
            raise Internal(f"stored content of {self.file.uri} is shorter than recorded",
                           reason="BLOB_TRUNCATED")


class ReceivedUpload:
    """An upload received and checked (limits, type), in temporary storage: not yet a file.

    See :meth:`FileStore.receive`. ``content`` holds the bytes when they were kept.
    """

    def __init__(self, store: FileStore, project_id: str, name: str, sniffed: Sniffed,
                 sha256: str, writer: BlobWriter, content: bytes | None) -> None:
        self._store = store
        self._writer = writer
        self.project_id = project_id
        self.name = name
        self.content_type = sniffed.content_type
        self.kind = sniffed.kind
        self.sha256 = sha256
        self.size = writer.size
        self.content = content
        self._sniffed = sniffed
        self.file: FileInfo | None = None

    async def commit(self) -> FileInfo:
        """Make the upload a file of its project (once)."""
        if self.file is None:
            self.file = await self._store._record(self.project_id, self._writer, self.name,
                                                  self._sniffed, self.sha256)
        return self.file


def _missing_blob(info: FileInfo) -> Internal:
    return Internal(f"the content of {info.uri} is missing from file storage",
                    reason="BLOB_MISSING")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _utc(value: dt.datetime) -> dt.datetime:
    # SQLite hands back naive datetimes; everything we store is UTC.
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _human(n: int) -> str:
    return f"{n / _MiB:g} MiB" if n >= _MiB else f"{n} bytes"


def _too_large(limit: int, kind: str | None) -> InvalidArgument:
    what = f"{kind} files" if kind else "files"
    return InvalidArgument.field(
        "metadata.size", f"{what} may be at most {limit} bytes ({_human(limit)})",
        reason="FILE_TOO_LARGE", metadata={"limitBytes": limit, "kind": kind or ""})


class FileStore:
    """Files of every project: content in a :class:`BlobStore`, metadata in ``rf_files``.

    Args:
        db: The database.
        blobs: Where content lives.
        thumbs: The thumbnail cache.
        limits: Largest file per kind.
        idle_timeout_s: Longest wait for the next part of an upload.
        reference_finders: Asked before a delete (more with :meth:`add_reference_finder`).
    """

    def __init__(self, db: Database, blobs: BlobStore, thumbs: thumbnails.ThumbnailCache, *,
                 limits: Limits, idle_timeout_s: float = 60.0,
                 reference_finders: list[ReferenceFinder] | None = None,
                 quotas: Quotas = NO_QUOTAS) -> None:
        self.db = db
        self.quotas = quotas
        self.blobs = blobs
        self.thumbs = thumbs
        self.limits = limits
        self.idle_timeout_s = idle_timeout_s
        self.reference_finders = reference_finders if reference_finders is not None else []
        # Thumbnails decode whole images: a couple at a time keeps the CPU for RPCs.
        self._render_slots = asyncio.Semaphore(2)

    async def start(self) -> None:
        await self.blobs.start()

    async def close(self) -> None:
        await self.blobs.close()

    # --- uploads ---------------------------------------------------------------------------

    async def upload(self, project_id: str,
                     parts: AsyncIterable[UploadMetadata | bytes]) -> FileInfo:
        """Store an upload: an :class:`UploadMetadata` first, then the content in chunks.

        The content is hashed and written to temporary storage as it arrives; limits are
        enforced as soon as they are passed (the rest is not read). Nothing stays behind when
        the upload fails, stalls or is cancelled.

        Raises:
            InvalidArgument: ``METADATA_REQUIRED``, ``UNEXPECTED_METADATA``,
                ``INVALID_FILE_NAME``, ``EMPTY_FILE``, ``FILE_TOO_LARGE``, ``SIZE_MISMATCH``,
                ``CHECKSUM_MISMATCH``, ``FILE_TYPE_MISMATCH``, ``UNSUPPORTED_FILE_TYPE``.
            DeadlineExceeded: ``UPLOAD_STALLED`` when no part arrives for ``idle_timeout_s``.
        """
        async with self.receive(project_id, parts) as received:
            return await received.commit()

    @contextlib.asynccontextmanager
    async def receive(self, project_id: str, parts: AsyncIterable[UploadMetadata | bytes], *,
                      keep_content: bool = False) -> AsyncIterator[ReceivedUpload]:
        """Receive an upload as :meth:`upload` does (same checks, limits and refusals), but
        hand it over *before* it becomes a file: the caller may look at it (with
        ``keep_content``, its bytes are in ``content``) and then
        :meth:`ReceivedUpload.commit` it, or leave the block without committing, which drops
        it (no file row, no blob).

        Raises:
            Like :meth:`upload`.
        """
        names.check_project_id(project_id)  # before any byte is stored
        it = aiter(parts)
        first = await self._next_part(it)
        if not isinstance(first, UploadMetadata):
            raise InvalidArgument.field(
                "metadata", "the first message must carry the file metadata (name, ...)",
                reason="METADATA_REQUIRED")
        meta = self._check_metadata(first)
        # Cheap early exit before reading any content.
        if meta.size > self.limits.largest:
            raise _too_large(self.limits.largest, None)
        writer = self.blobs.open_write()
        try:
            content = bytearray() if keep_content else None
            sniffed = await self._receive(it, writer, meta, content)
            sha = await writer.finish()
            if meta.size and writer.size != meta.size:
                raise InvalidArgument.field(
                    "metadata.size", f"declared {meta.size} bytes but received {writer.size}",
                    reason="SIZE_MISMATCH")
            if meta.sha256 and sha != meta.sha256:
                raise InvalidArgument.field(
                    "metadata.sha256", f"declared {meta.sha256} but the content hashes to {sha}",
                    reason="CHECKSUM_MISMATCH")
            yield ReceivedUpload(self, project_id, meta.name, sniffed, sha, writer,
                                 bytes(content) if content is not None else None)
        finally:
            writer.discard()  # a no-op once committed

    async def _next_part(self, it: AsyncIterator[UploadMetadata | bytes]
                         ) -> UploadMetadata | bytes | None:
        try:
            async with asyncio.timeout(self.idle_timeout_s):
                return await anext(it)
        except StopAsyncIteration:
            return None
        except TimeoutError:
            raise DeadlineExceeded(
                f"no upload data received for {self.idle_timeout_s:g} s; upload abandoned",
                reason="UPLOAD_STALLED",
                metadata={"idleTimeoutSeconds": f"{self.idle_timeout_s:g}"}) from None

    def _check_metadata(self, meta: UploadMetadata) -> UploadMetadata:
        v = Violations()
        v.check(meta.size >= 0, "metadata.size", "must not be negative")
        v.check(not meta.sha256 or _SHA_HEX_RE.fullmatch(meta.sha256) is not None,
                "metadata.sha256", "must be 64 hexadecimal digits")
        v.check(len(meta.content_type) <= 200, "metadata.content_type",
                "must be at most 200 characters")
        v.raise_if_any()
        name = names.sanitise_name(meta.name, field="metadata.name")
        return UploadMetadata(name, meta.content_type, meta.size, meta.sha256.lower())

    async def _receive(self, it: AsyncIterator[UploadMetadata | bytes], writer: BlobWriter,
                       meta: UploadMetadata, content: bytearray | None = None) -> Sniffed:
        """Read the content into ``writer`` (and ``content`` when given); sniff its type from
        the first bytes."""
        head = bytearray()
        sniffed: Sniffed | None = None
        limit = self.limits.largest
        total = 0
        while (part := await self._next_part(it)) is not None:
            if isinstance(part, UploadMetadata):
                raise InvalidArgument.field(
                    "metadata", "only the first message may carry metadata; send chunks next",
                    reason="UNEXPECTED_METADATA")
            if not part:
                continue
            total += len(part)
            if total > limit:
                raise _too_large(limit, sniffed.kind if sniffed else None)
            if sniffed is None:
                if head or len(part) < SNIFF_BYTES:
                    head += part
                    if len(head) < SNIFF_BYTES:
                        continue
                    part, head = bytes(head), bytearray()
                sniffed = sniff(bytes(part[:SNIFF_BYTES]), meta.name, meta.content_type)
                limit = self._check_kind_limit(sniffed.kind, max(total, meta.size))
            if meta.size and total > meta.size:
                raise InvalidArgument.field(
                    "metadata.size", f"declared {meta.size} bytes but received more",
                    reason="SIZE_MISMATCH")
            await writer.write(part)
            if content is not None:
                content += part
        if sniffed is None:
            # The whole file fits in the head: sniff it exactly (raises EMPTY_FILE when empty).
            data = bytes(head)
            sniffed = sniff(data, meta.name, meta.content_type, full=data)
            self._check_kind_limit(sniffed.kind, max(total, meta.size))
            await writer.write(data)
            if content is not None:
                content += data
        return sniffed

    def _check_kind_limit(self, kind: Kind, size: int) -> int:
        limit = self.limits.for_kind(kind)
        if size > limit:
            raise _too_large(limit, kind)
        return limit

    async def _record(self, project_id: str, writer: BlobWriter, name: str, sniffed: Sniffed,
                      sha: str) -> FileInfo:
        if self.quotas.stored_bytes:
            async with self.db.read() as conn:
                used = int(await conn.scalar(sa.select(sa.func.coalesce(sa.func.sum(
                    files_table.c.size), 0)).where(files_table.c.project_id == project_id))
                    or 0)
            self.quotas.check("stored_bytes", self.quotas.stored_bytes, project_id, used,
                              writer.size, "bytes")
        file_id = uuid.uuid4().hex
        info = FileInfo(uri=names.build_uri(project_id, file_id, name), id=file_id,
                        project_id=project_id, name=name, content_type=sniffed.content_type,
                        size=writer.size, sha256=sha, kind=sniffed.kind, create_time=_now())
        # Under the guard, a concurrent delete of the last file with this content cannot
        # remove the blob between our commit and our row.
        async with self.blobs.guard(sha):
            created = await self.blobs.commit(writer, sha)
            try:
                async with self.db.write() as conn:
                    await conn.execute(files_table.insert().values(
                        project_id=project_id, id=file_id, name=name,
                        content_type=info.content_type, size=info.size, sha256=sha,
                        kind=info.kind, create_time=info.create_time))
            except BaseException:
                if created:
                    await self._collect_unlocked(sha)
                raise
        return info

    async def store_bytes(self, project_id: str, data: bytes, *, name: str,
                          expected_kind: str | None = None) -> FileInfo:
        """Store bytes produced server-side (e.g. a Python column's output).

        The type is sniffed from ``data``; a name without an extension gets the sniffed one.

        Args:
            expected_kind: ``"image"``, ``"audio"``, ``"document"``, or ``None``/``"file"``
                for any kind.

        Raises:
            InvalidArgument: as :meth:`upload`, plus ``FILE_KIND_MISMATCH``.
        """
        if expected_kind not in (None, "file", "document", "image", "audio"):
            raise ValueError(f"unknown file kind {expected_kind!r}")
        clean = names.sanitise_name(name)
        sniffed = sniff(data[:SNIFF_BYTES], clean, "", full=data)
        if expected_kind not in (None, "file") and sniffed.kind != expected_kind:
            raise InvalidArgument(
                f"expected {expected_kind} content but got {sniffed.content_type}",
                reason="FILE_KIND_MISMATCH",
                metadata={"expectedKind": expected_kind, "kind": sniffed.kind,
                          "contentType": sniffed.content_type})
        if not names.has_extension(clean):
            clean = names.sanitise_name(f"{clean}.{sniffed.extension}")

        async def parts() -> AsyncIterator[UploadMetadata | bytes]:
            yield UploadMetadata(clean, sniffed.content_type, len(data))
            view = memoryview(data)
            for start in range(0, len(view), CHUNK_BYTES):
                yield view[start:start + CHUNK_BYTES]  # type: ignore[misc]

        return await self.upload(project_id, parts())

    # --- reads -----------------------------------------------------------------------------

    async def get(self, project_id: str, uri: str, *, field: str = "uri") -> FileInfo:
        """The file ``uri`` of ``project_id``.

        Raises:
            InvalidArgument: ``INVALID_FILE_URI`` for a malformed URI.
            NotFound: unknown file, or a file of another project.
        """
        parsed = names.parse_uri(uri, field=field)
        row = None
        if parsed.project_id == project_id:
            async with self.db.read() as conn:
                row = (await conn.execute(sa.select(files_table).where(
                    files_table.c.project_id == project_id,
                    files_table.c.id == parsed.file_id))).mappings().first()
        if row is None or (parsed.name is not None and parsed.name != row["name"]):
            raise NotFound(f"file {uri!r} not found", reason="FILE_NOT_FOUND",
                           resource_type="file", resource_name=uri)
        return _info(row)

    async def validate_uri(self, project_id: str, uri: str, dtype: str) -> FileInfo:
        """Check that ``uri`` may fill a cell of ``dtype`` (``file``, ``image`` or ``audio``).

        Raises:
            InvalidArgument: ``INVALID_FILE_URI``, or ``FILE_KIND_MISMATCH`` (an ``image``
                column needs an image, ``audio`` an audio file; ``file`` takes any).
            NotFound: unknown URI or another project's.
        """
        if dtype not in _DTYPE_KINDS:
            raise ValueError(f"not a file dtype: {dtype!r}")
        info = await self.get(project_id, uri)
        wanted = _DTYPE_KINDS[dtype]
        if wanted is not None and info.kind != wanted:
            raise InvalidArgument(
                f"{uri} is {info.content_type} ({info.kind}); a column of dtype {dtype!r} needs "
                f"an {wanted} file", reason="FILE_KIND_MISMATCH",
                metadata={"uri": uri, "kind": info.kind, "dtype": dtype})
        return info

    async def open_range(self, project_id: str, uri: str, offset: int = 0,
                         length: int = 0) -> FileRange:
        """The bytes ``[offset, offset + length)`` of a file (``length`` 0: to the end; a
        range past the end is cut at the end).

        Raises:
            InvalidArgument: negative values, or ``RANGE_NOT_SATISFIABLE`` when ``offset`` is
                not before the end of the file.
            NotFound: as :meth:`get`.
        """
        v = Violations()
        v.check(offset >= 0, "offset", "must not be negative")
        v.check(length >= 0, "length", "must not be negative (0: to the end)")
        v.raise_if_any()
        info = await self.get(project_id, uri)
        if offset >= info.size:
            raise InvalidArgument.field(
                "offset", f"must be less than the file size ({info.size} bytes)",
                reason="RANGE_NOT_SATISFIABLE", metadata={"size": info.size})
        available = info.size - offset
        return FileRange(info, offset, min(length, available) if length else available,
                         self.blobs)

    async def read_bytes(self, project_id: str, uri: str, max_bytes: int | None = None
                         ) -> bytes:
        """A whole file in memory (for small files: images for models, documents to parse).

        Raises:
            InvalidArgument: ``FILE_TOO_LARGE`` when the file exceeds ``max_bytes``.
            NotFound: as :meth:`get`.
        """
        info = await self.get(project_id, uri)
        return await self._read_all(info, max_bytes)

    async def _read_all(self, info: FileInfo, max_bytes: int | None = None) -> bytes:
        if max_bytes is not None and info.size > max_bytes:
            raise InvalidArgument.field(
                "uri", f"the file has {info.size} bytes; at most {max_bytes} can be used here",
                reason="FILE_TOO_LARGE", metadata={"size": info.size, "limitBytes": max_bytes})
        out = bytearray()
        async for chunk in FileRange(info, 0, info.size, self.blobs):
            out += chunk
        return bytes(out)

    async def read_for_model(self, project_id: str, uri: str) -> tuple[bytes, str]:
        """``(content, content_type)`` of a file of ``project_id``, for a model input."""
        info = await self.get(project_id, uri)
        return await self._read_all(info, self.limits.for_kind(info.kind)), info.content_type

    async def list(self, project_id: str, *, offset: int = 0, limit: int = 0,
                   page_token: str = "") -> FilePage:
        """The project's files, newest first.

        Args:
            offset: Files to skip (ignored with ``page_token``).
            limit: Page size, 1 to 100 (0: 100).
            page_token: ``next_page_token`` of the previous page.

        Raises:
            InvalidArgument: bad ``offset``/``limit`` or a token that is not ours.
        """
        v = Violations()
        v.check(offset >= 0, "offset", "must not be negative")
        v.check(0 <= limit <= MAX_LIST_LIMIT, "limit", f"must be between 1 and {MAX_LIST_LIMIT}"
                                                       f" (0: {MAX_LIST_LIMIT})")
        v.raise_if_any()
        limit = limit or MAX_LIST_LIMIT
        c = files_table.c
        query = sa.select(files_table).where(c.project_id == project_id)
        if page_token:
            after_time, after_id = _decode_token(page_token, project_id)
            query = query.where(sa.or_(
                c.create_time < after_time,
                sa.and_(c.create_time == after_time, c.id < after_id)))
        elif offset:
            query = query.offset(offset)
        query = query.order_by(c.create_time.desc(), c.id.desc()).limit(limit + 1)
        async with self.db.read() as conn:
            rows = (await conn.execute(query)).mappings().all()
            total = await conn.scalar(sa.select(sa.func.count()).select_from(files_table)
                                      .where(c.project_id == project_id))
        items = [_info(row) for row in rows[:limit]]
        token = _encode_token(items[-1], project_id) if len(rows) > limit else ""
        return FilePage(items, token, int(total or 0))

    # --- deletion --------------------------------------------------------------------------

    async def delete(self, project_id: str, uri: str, *, force: bool = False) -> None:
        """Delete a file; its content goes when no file of any project has it anymore.

        Raises:
            FailedPrecondition: ``FILE_IN_USE`` naming the tables that reference the file,
                unless ``force``.
            NotFound: as :meth:`get`.
        """
        info = await self.get(project_id, uri)
        if not force:
            users = await self.references(project_id, info.uri)
            if users:
                raise FailedPrecondition(
                    f"file {info.name!r} is used by {', '.join(users)}; remove it from "
                    "there first, or delete with force=true", reason="FILE_IN_USE",
                    metadata={"tables": ",".join(users), "uri": info.uri},
                    resource_type="file", resource_name=info.uri)
        async with self.db.write() as conn:
            deleted = (await conn.execute(files_table.delete().where(
                files_table.c.project_id == project_id, files_table.c.id == info.id))).rowcount
        if not deleted:
            raise NotFound(f"file {uri!r} not found", reason="FILE_NOT_FOUND",
                           resource_type="file", resource_name=uri)
        async with self.blobs.guard(info.sha256):
            await self._collect_unlocked(info.sha256)

    def add_reference_finder(self, finder: ReferenceFinder) -> None:
        """Ask ``finder`` too before a delete (another domain's references to files)."""
        self.reference_finders.append(finder)

    async def references(self, project_id: str, uri: str) -> builtins.list[str]:
        """Names of the things that reference ``uri`` (asks every reference finder)."""
        found = await asyncio.gather(*(finder(project_id, uri)
                                       for finder in list(self.reference_finders)))
        return sorted({name for names_ in found for name in names_})

    async def _collect_unlocked(self, sha: str) -> None:
        """Delete the blob ``sha`` (and its thumbnails) if no file row has it. Call it under
        ``blobs.guard(sha)``."""
        async with self.db.read() as conn:
            used = await conn.scalar(sa.select(files_table.c.id).where(
                files_table.c.sha256 == sha).limit(1))
        if used is None:
            await self.blobs.delete(sha)
            await asyncio.to_thread(self.thumbs.drop, sha)

    # --- thumbnails ------------------------------------------------------------------------

    async def thumbnail(self, project_id: str, uri: str, size: int = 0) -> bytes:
        """A PNG of the image ``uri`` whose longest side is ``size`` (0: 256; at most 1024).

        Raises:
            InvalidArgument: bad ``size``, ``NOT_AN_IMAGE``, ``UNREADABLE_IMAGE``.
            NotFound: as :meth:`get`.
        """
        size = thumbnails.check_size(size)
        info = await self.get(project_id, uri)
        if info.kind != "image":
            raise InvalidArgument.field("uri", f"is {info.content_type}, not an image",
                                        reason="NOT_AN_IMAGE")
        cached = await asyncio.to_thread(self.thumbs.get, info.sha256, size)
        if cached is not None:
            return cached
        async with self._render_slots:
            data = await self._read_all(info)
            png = await asyncio.to_thread(thumbnails.render, data, size)
        await asyncio.to_thread(self.thumbs.put, info.sha256, size, png)
        return png


def _info(row: Any) -> FileInfo:
    return FileInfo(
        uri=names.build_uri(row["project_id"], row["id"], row["name"]), id=row["id"],
        project_id=row["project_id"], name=row["name"], content_type=row["content_type"],
        size=int(row["size"]), sha256=row["sha256"], kind=row["kind"],
        create_time=_utc(row["create_time"]))


def _project_tag(project_id: str) -> str:
    return hashlib.sha256(project_id.encode()).hexdigest()[:12]


def _encode_token(last: FileInfo, project_id: str) -> str:
    payload = {"v": 1, "p": _project_tag(project_id), "t": last.create_time.isoformat(),
               "i": last.id}
    return base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode()
                                    ).decode().rstrip("=")


def _decode_token(token: str, project_id: str) -> tuple[dt.datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        payload = json.loads(raw)
        if payload["v"] != 1 or payload["p"] != _project_tag(project_id):
            raise ValueError("token of another listing")
        after_time = _utc(dt.datetime.fromisoformat(payload["t"]))
        after_id = payload["i"]
        if not isinstance(after_id, str) or not names.FILE_ID_RE.fullmatch(after_id):
            raise ValueError("bad id")
    except (ValueError, TypeError, KeyError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidArgument.field("page_token", "is not a token from a previous ListFiles "
                                    "call of this project", reason="INVALID_PAGE_TOKEN") from exc
    return after_time, after_id
