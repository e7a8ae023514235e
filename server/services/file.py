"""FileService: upload (client-streaming), get, list, delete, download (server-streaming) and
thumbnails. Thin: messages in and out of the files domain (:mod:`rowforge.server.files.store`).

Contract details the proto leaves open:

* URIs are ``file://<project_id>/<file_id>/<percent-encoded name>`` (see
  :mod:`rowforge.server.files.names`); a malformed URI is INVALID_ARGUMENT
  (``INVALID_FILE_URI``), an unknown one or another project's is NOT_FOUND.
* Upload chunks may be as large as a message may be (``max_message_bytes``, 40 MiB by default;
  gRPC refuses a larger message with RESOURCE_EXHAUSTED); 1 MiB is the recommended size
  (``bench/bench_files.py --chunk-kib``: larger chunks cost the server more CPU per byte and
  more memory per upload in flight). A file larger than its kind's limit is INVALID_ARGUMENT
  ``FILE_TOO_LARGE`` on ``metadata.size`` as soon as the stream passes the limit; an upload
  idle for ``upload_idle_timeout_s`` is DEADLINE_EXCEEDED ``UPLOAD_STALLED``.
* Download ranges: ``offset`` must be before the end of the file (else INVALID_ARGUMENT
  ``RANGE_NOT_SATISFIABLE`` on ``offset``); a ``length`` past the end is cut at the end.
* Thumbnails never enlarge: an image smaller than ``size`` keeps its dimensions.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator

import grpc

from rowforge import codec
from rowforge.server.auth import current_project
from rowforge.server.errors import InvalidArgument
from rowforge.server.files.store import FileInfo, FileStore, UploadMetadata
from rowforge.v1 import file_service_pb2 as pb
from rowforge.v1 import file_service_pb2_grpc

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["FileService"].full_name

FILE_KINDS = {"document": pb.FILE_KIND_DOCUMENT, "image": pb.FILE_KIND_IMAGE,
              "audio": pb.FILE_KIND_AUDIO}


def file_pb(info: FileInfo) -> pb.FileInfo:
    return pb.FileInfo(uri=info.uri, id=info.id, name=info.name, content_type=info.content_type,
                   size=info.size, sha256=info.sha256, kind=info.kind,
                       file_kind=FILE_KINDS.get(info.kind, pb.FILE_KIND_UNSPECIFIED),
                   create_time=codec.timestamp_to_pb(info.create_time))


def upload_metadata(m: pb.FileMetadata) -> UploadMetadata:
    """An upload's declared metadata, for the files domain."""
    return UploadMetadata(name=m.name, content_type=m.content_type, size=m.size,
                          sha256=m.sha256)


async def _parts(requests: AsyncIterator[pb.UploadFileRequest]
                 ) -> AsyncGenerator[UploadMetadata | bytes, None]:
    async for request in requests:
        part = request.WhichOneof("part")
        if part == "metadata":
            yield upload_metadata(request.metadata)
        elif part == "chunk":
            yield request.chunk
        else:
            raise InvalidArgument.field("part", "each message must set metadata or chunk")


class FileServicer(file_service_pb2_grpc.FileServiceServicer):
    """Files of the calling project."""

    def __init__(self, files: FileStore) -> None:
        self.files = files

    async def UploadFile(self, request_iterator: AsyncIterator[pb.UploadFileRequest],
                         context: grpc.aio.ServicerContext) -> pb.UploadFileResponse:
        async with contextlib.aclosing(_parts(request_iterator)) as parts:
            info = await self.files.upload(current_project(), parts)
        return pb.UploadFileResponse(file=file_pb(info))

    async def GetFile(self, request: pb.GetFileRequest, context: grpc.aio.ServicerContext
                      ) -> pb.GetFileResponse:
        return pb.GetFileResponse(file=file_pb(await self.files.get(current_project(),
                                                                   request.uri)))

    async def ListFiles(self, request: pb.ListFilesRequest, context: grpc.aio.ServicerContext
                        ) -> pb.ListFilesResponse:
        page = await self.files.list(current_project(), offset=request.offset,
                                     limit=request.limit, page_token=request.page_token)
        return pb.ListFilesResponse(items=[file_pb(i) for i in page.items],
                                    next_page_token=page.next_page_token, total=page.total)

    async def DeleteFile(self, request: pb.DeleteFileRequest, context: grpc.aio.ServicerContext
                         ) -> pb.DeleteFileResponse:
        await self.files.delete(current_project(), request.uri, force=request.force)
        return pb.DeleteFileResponse()

    async def DownloadFile(self, request: pb.DownloadFileRequest,
                           context: grpc.aio.ServicerContext
                           ) -> AsyncIterator[pb.DownloadFileResponse]:
        selected = await self.files.open_range(current_project(), request.uri,
                                               request.offset, request.length)
        yield pb.DownloadFileResponse(file=file_pb(selected.file))
        async for chunk in selected:
            yield pb.DownloadFileResponse(chunk=chunk)

    async def GetThumbnail(self, request: pb.GetThumbnailRequest,
                           context: grpc.aio.ServicerContext) -> pb.GetThumbnailResponse:
        png = await self.files.thumbnail(current_project(), request.uri, request.size)
        return pb.GetThumbnailResponse(content=png, content_type="image/png")
