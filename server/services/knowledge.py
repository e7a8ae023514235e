"""KnowledgeService: EmbedFile (a file into a knowledge table, streamed progress) and
HybridSearch (vector + BM25, fused with RRF, optional reranking).

Thin: validate the request shape, call ``app.knowledge`` (:mod:`rowforge.server.knowledge`),
convert the results.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from rowforge.server.app import App
from rowforge.server.auth import current_project
from rowforge.server.errors import InvalidArgument
from rowforge.server.knowledge.base import Knowledge, install_knowledge
from rowforge.server.knowledge.embed_file import Completed, Progress, Started
from rowforge.server.services.table_convert import row_to_pb
from rowforge.v1 import knowledge_service_pb2 as pb
from rowforge.v1 import knowledge_service_pb2_grpc

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["KnowledgeService"].full_name


def _required(value: str, field: str) -> str:
    if not value:
        raise InvalidArgument.field(field, "is required")
    return value


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
        return pb.HybridSearchResponse(
            items=[pb.SearchResult(row=row_to_pb(hit.row, inputs=inputs), score=hit.score,
                                   vector_rank=hit.vector_rank, lexical_rank=hit.lexical_rank)
                   for hit in outcome.hits],
            reranked=outcome.reranked, rerank_error=outcome.rerank_error)

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


def register(server: grpc.aio.Server, app: App) -> str:
    """Attach ``app.knowledge`` / ``app.rag`` (needs ``app.tables``) and serve."""
    knowledge = install_knowledge(app)
    knowledge_service_pb2_grpc.add_KnowledgeServiceServicer_to_server(
        KnowledgeServicer(knowledge), server)
    return SERVICE_NAME
