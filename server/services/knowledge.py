"""KnowledgeService: not implemented yet; every RPC answers UNIMPLEMENTED."""

from __future__ import annotations

import grpc

from rowforge.server.app import App
from rowforge.v1 import knowledge_service_pb2, knowledge_service_pb2_grpc

SERVICE_NAME = knowledge_service_pb2.DESCRIPTOR.services_by_name["KnowledgeService"].full_name


def register(server: grpc.aio.Server, app: App) -> str:
    knowledge_service_pb2_grpc.add_KnowledgeServiceServicer_to_server(knowledge_service_pb2_grpc.KnowledgeServiceServicer(), server)
    return SERVICE_NAME
