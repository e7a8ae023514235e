"""FileService: not implemented yet; every RPC answers UNIMPLEMENTED."""

from __future__ import annotations

import grpc

from rowforge.server.app import App
from rowforge.v1 import file_service_pb2, file_service_pb2_grpc

SERVICE_NAME = file_service_pb2.DESCRIPTOR.services_by_name["FileService"].full_name


def register(server: grpc.aio.Server, app: App) -> str:
    file_service_pb2_grpc.add_FileServiceServicer_to_server(file_service_pb2_grpc.FileServiceServicer(), server)
    return SERVICE_NAME
