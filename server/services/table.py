"""TableService: not implemented yet; every RPC answers UNIMPLEMENTED."""

from __future__ import annotations

import grpc

from rowforge.server.app import App
from rowforge.v1 import table_service_pb2, table_service_pb2_grpc

SERVICE_NAME = table_service_pb2.DESCRIPTOR.services_by_name["TableService"].full_name


def register(server: grpc.aio.Server, app: App) -> str:
    table_service_pb2_grpc.add_TableServiceServicer_to_server(table_service_pb2_grpc.TableServiceServicer(), server)
    return SERVICE_NAME
