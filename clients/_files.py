"""``client.file``: upload, download, list and delete stored files."""

from __future__ import annotations

import mimetypes
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from rowforge.clients import _convert as c
from rowforge.clients import types as t
from rowforge.clients._transport import (
    Emit,
    Next,
    Open,
    Plan,
    Transport,
    Unary,
    Upload,
    one_call,
    sync_view,
)
from rowforge.v1 import file_service_pb2 as fpb

FILE = "FileService"
#: Bytes per upload message: 1 MiB, the size the server handles cheapest (it accepts up to its
#: message limit).
CHUNK = 1024 * 1024

FileSource = str | os.PathLike[str] | bytes | BinaryIO


def file_source(source: FileSource, name: str | None = None, content_type: str | None = None
                ) -> tuple[fpb.FileMetadata, Iterator[bytes]]:
    """An upload's metadata and its content in :data:`CHUNK`-byte pieces, from a path, bytes
    (``name`` required) or a binary file object (named by ``name`` or its ``.name``).

    Raises:
        FileNotFoundError: the path does not exist.
        InvalidArgumentError: no name for bytes or an unnamed file object.
    """
    size = 0
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if not name:
            raise c.bad_argument("name", "is required when uploading bytes")
        size = len(data)

        def chunks() -> Iterator[bytes]:
            for i in range(0, len(data), CHUNK):
                yield data[i:i + CHUNK]
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"no such file: {path}")
        name = name or path.name
        size = path.stat().st_size

        def chunks() -> Iterator[bytes]:
            with path.open("rb") as fh:
                yield from iter(lambda: fh.read(CHUNK), b"")
    else:
        fh = source
        name = name or Path(getattr(fh, "name", "") or "").name
        if not name:
            raise c.bad_argument("name", "is required when uploading a file object without a "
                                         "name")

        def chunks() -> Iterator[bytes]:
            yield from iter(lambda: fh.read(CHUNK), b"")
    content_type = content_type or mimetypes.guess_type(name)[0] or ""
    return fpb.FileMetadata(name=name, content_type=content_type, size=size), chunks()


def _requests(source: FileSource, name: str | None, content_type: str | None
              ) -> tuple[fpb.FileMetadata, Iterator[fpb.UploadFileRequest]]:
    metadata, chunks = file_source(source, name, content_type)

    def requests() -> Iterator[fpb.UploadFileRequest]:
        yield fpb.UploadFileRequest(metadata=metadata)
        for chunk in chunks:
            yield fpb.UploadFileRequest(chunk=chunk)

    return metadata, requests()


def upload_plan(source: FileSource, name: str | None = None, content_type: str | None = None
                ) -> Plan[t.FileInfo]:
    """The upload as a plan step, for composite calls (``embed_file``, batch images)."""
    _, requests = _requests(source, name, content_type)
    resp = yield Upload(FILE, "UploadFile", requests)
    return c.file_py(resp.file)


class FileClient:
    """Stored files (documents, images, audio). Reached as ``client.file``."""

    def __init__(self, transport: Transport) -> None:
        self._t = sync_view(transport)

    def upload_file(self, file_path: FileSource, *, name: str | None = None,
                    content_type: str | None = None) -> t.FileInfo:
        """Upload a file (a path, bytes with ``name``, or a binary file object) in 1 MiB
        chunks; returns its info, whose ``.uri`` rows and requests use.

        Raises:
            FileNotFoundError: the local path does not exist.
            InvalidArgumentError: unsupported type, too large, or name/type mismatch.
        """
        return self._t.run(upload_plan(file_path, name, content_type))

    def get_file(self, uri: str) -> t.FileInfo:
        """A stored file's metadata."""
        return self._t.run(one_call(Unary(FILE, "GetFile", fpb.GetFileRequest(uri=uri),
                                        idempotent=True), lambda r: c.file_py(r.file)))

    def list_files(self, offset: int = 0, limit: int = 100, *, page_token: str = ""
                   ) -> t.Page[t.FileInfo]:
        """One page of the project's files, newest first."""
        request = fpb.ListFilesRequest(offset=offset, limit=limit, page_token=page_token)
        return self._t.run(one_call(
            Unary(FILE, "ListFiles", request, idempotent=True),
            lambda r: t.Page[t.FileInfo](items=[c.file_py(f) for f in r.items], offset=offset,
                                         limit=limit, total=r.total,
                                         next_page_token=r.next_page_token)))

    def iter_files(self) -> Iterator[t.FileInfo]:
        """Every file of the project, following page tokens."""

        def plan() -> Plan[None]:
            token = ""
            while True:
                resp = yield Unary(FILE, "ListFiles", fpb.ListFilesRequest(
                    limit=100, page_token=token), idempotent=True)
                for f in resp.items:
                    yield Emit(c.file_py(f))
                token = resp.next_page_token
                if not token:
                    return

        return self._t.iterate(plan())

    def delete_file(self, uri: str, *, force: bool = False) -> t.OkResponse:
        """Delete a file; refused (FAILED_PRECONDITION) while rows use it unless ``force``."""
        return self._t.run(one_call(Unary(FILE, "DeleteFile",
                                        fpb.DeleteFileRequest(uri=uri, force=force)),
                                  lambda r: t.OkResponse()))

    def iter_download(self, uri: str, offset: int = 0, length: int = 0) -> Iterator[bytes]:
        """A file's bytes (optionally a range) in chunks."""

        def plan() -> Plan[None]:
            stream = yield Open(FILE, "DownloadFile", fpb.DownloadFileRequest(
                uri=uri, offset=offset, length=length), idempotent=True, deadline="upload")
            while (msg := (yield Next(stream))) is not None:
                if msg.WhichOneof("part") == "chunk":
                    yield Emit(msg.chunk)

        return self._t.iterate(plan())

    def download_file(self, uri: str, dest: str | os.PathLike[str] | None = None, *,
                      offset: int = 0, length: int = 0) -> Any:
        """Download a file: its bytes, or (with ``dest``, a file or a directory) the path
        written. A failed download leaves no partial file behind."""

        def plan() -> Plan[Any]:
            stream = yield Open(FILE, "DownloadFile", fpb.DownloadFileRequest(
                uri=uri, offset=offset, length=length), idempotent=True, deadline="upload")
            first = yield Next(stream)
            info = c.file_py(first.file) if first is not None and first.HasField("file") else None
            parts = [] if first is None or info is not None else [first.chunk]
            if dest is None:
                while (msg := (yield Next(stream))) is not None:
                    parts.append(msg.chunk)
                return b"".join(parts)
            target = Path(dest).expanduser()
            if target.is_dir():
                target = target / ((info.name if info else "") or uri.rsplit("/", 1)[-1])
            partial = target.with_name(target.name + ".part")
            try:
                with partial.open("wb") as fh:
                    for part in parts:
                        fh.write(part)
                    while (msg := (yield Next(stream))) is not None:
                        fh.write(msg.chunk)
                partial.replace(target)
            finally:
                partial.unlink(missing_ok=True)
            return target

        return self._t.run(plan())

    def get_thumbnail(self, uri: str, size: int = 256) -> bytes:
        """A small PNG preview of an image."""
        return self._t.run(one_call(Unary(FILE, "GetThumbnail", fpb.GetThumbnailRequest(
            uri=uri, size=size), idempotent=True), lambda r: bytes(r.content)))


