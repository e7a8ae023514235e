"""KnowledgeService: EmbedFile (a stored file into a knowledge table, streamed progress),
EmbedFileContent (a file uploaded with the call: client-streaming like UploadFile, kept only
once its rows are written) and HybridSearch (vector + BM25, fused with RRF, optional
reranking).

Thin: validate the request shape, call :class:`Knowledge` (:mod:`rowforge.server.knowledge`),
convert the results.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator

import grpc

from rowforge.server.auth import current_project
from rowforge.server.errors import FieldViolation, InvalidArgument, RowforgeError
from rowforge.server.files.store import UploadMetadata
from rowforge.server.knowledge.base import Knowledge
from rowforge.server.knowledge.embed_file import Completed, Progress, Started
from rowforge.server.services.file import file_pb, upload_metadata
from rowforge.server.services.table_convert import file_columns, fill_row, legacy_values
from rowforge.v1 import knowledge_service_pb2 as pb
from rowforge.v1 import knowledge_service_pb2_grpc

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["KnowledgeService"].full_name


def _required(value: str, field: str) -> str:
    if not value:
        raise InvalidArgument.field(field, "is required")
    return value


def _content_field(name: str) -> str:
    """A field of the files domain or of chunking, as EmbedFileContent's request names it."""
    if name.startswith("metadata."):  # UploadFile's metadata is our metadata.file
        return "metadata.file." + name.removeprefix("metadata.")
    return {"chunk_size": "metadata.chunk_size", "chunk_overlap": "metadata.chunk_overlap",
            "file": "metadata.file"}.get(name, name)


async def _content_parts(meta: pb.EmbedFileContentMetadata,
                         requests: AsyncIterator[pb.EmbedFileContentRequest]
                         ) -> AsyncGenerator[UploadMetadata | bytes, None]:
    """EmbedFileContent's messages as the files domain's upload parts."""
    yield upload_metadata(meta.file)
    async for request in requests:
        part = request.WhichOneof("part")
        if part == "chunk":
            yield request.chunk
        elif part == "metadata":
            raise InvalidArgument.field(
                "metadata", "only the first message may carry metadata; send chunks next",
                reason="UNEXPECTED_METADATA")
        else:
            raise InvalidArgument.field("part", "each message must set metadata or chunk")


class KnowledgeServicer(knowledge_service_pb2_grpc.KnowledgeServiceServicer):
    """KnowledgeService over :class:`~rowforge.server.knowledge.base.Knowledge`."""

    def __init__(self, knowledge: Knowledge) -> None:
        self.knowledge = knowledge

    async def HybridSearch(self, request: pb.HybridSearchRequest,
                           context: grpc.aio.ServicerContext) -> pb.HybridSearchResponse:
        schema = await self.knowledge.knowledge_table(current_project(),
                                                      _required(request.table_id, "table_id"))
        outcome = await self.knowledge.search(
            schema, request.query, k=request.k, where=request.where,
            reranking_model=request.reranking_model, columns=list(request.columns))
        inputs = frozenset(c.id for c in schema.columns if c.gen_config is None)
        files, legacy = file_columns(schema), legacy_values(request)
        response = pb.HybridSearchResponse(reranked=outcome.reranked,
                                           rerank_error=outcome.rerank_error)
        items = response.items
        for hit in outcome.hits:
            item = items.add()
            fill_row(item.row, hit.row, inputs, files, legacy=legacy)
            item.score = hit.score
            item.vector_rank = hit.vector_rank
            item.lexical_rank = hit.lexical_rank
        return response

    async def EmbedFileContent(self, request_iterator: AsyncIterator[pb.EmbedFileContentRequest],
                               context: grpc.aio.ServicerContext
                               ) -> pb.EmbedFileContentResponse:
        requests = aiter(request_iterator)
        first = await anext(requests, None)
        if first is None or first.WhichOneof("part") != "metadata":
            raise InvalidArgument.field(
                "metadata", "the first message must carry the metadata (table_id, file, ...)",
                reason="METADATA_REQUIRED")
        meta = first.metadata
        schema = await self.knowledge.knowledge_table(
            current_project(), _required(meta.table_id, "metadata.table_id"))
        try:
            async with contextlib.aclosing(_content_parts(meta, requests)) as parts:
                done = await self.knowledge.embed_content(
                    schema, parts, chunk_size=meta.chunk_size,
                    chunk_overlap=meta.chunk_overlap)
        except RowforgeError as exc:
            exc.field_violations = [FieldViolation(_content_field(v.field), v.description)
                                    for v in exc.field_violations]
            raise
        return pb.EmbedFileContentResponse(
            file=file_pb(done.file), chunk_count=done.chunk_count, page_count=done.page_count,
            row_count=len(done.row_ids), row_ids=done.row_ids)

    async def EmbedFile(self, request: pb.EmbedFileRequest,
                        context: grpc.aio.ServicerContext) -> AsyncIterator[pb.EmbedFileResponse]:
        schema = await self.knowledge.knowledge_table(current_project(),
                                                      _required(request.table_id, "table_id"))
        events = self.knowledge.embed_file(schema, _required(request.file_uri, "file_uri"),
                                           chunk_size=request.chunk_size,
                                           chunk_overlap=request.chunk_overlap)
        async for event in events:
            if isinstance(event, Started):
                yield pb.EmbedFileResponse(started=pb.EmbedFileStarted(
                    file_uri=event.file_uri, chunk_count=event.chunk_count,
                    page_count=event.page_count))
            elif isinstance(event, Progress):
                yield pb.EmbedFileResponse(progress=pb.EmbedFileProgress(
                    chunks_done=event.chunks_done, chunk_count=event.chunk_count))
            elif isinstance(event, Completed):
                yield pb.EmbedFileResponse(completed=pb.EmbedFileCompleted(
                    row_count=len(event.row_ids), row_ids=event.row_ids))
