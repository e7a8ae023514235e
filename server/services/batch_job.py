"""BatchJobService: not implemented yet; every RPC answers UNIMPLEMENTED."""

from __future__ import annotations

import grpc

from rowforge.server.app import App
from rowforge.v1 import batch_job_service_pb2, batch_job_service_pb2_grpc

SERVICE_NAME = batch_job_service_pb2.DESCRIPTOR.services_by_name["BatchJobService"].full_name


def register(server: grpc.aio.Server, app: App) -> str:
    batch_job_service_pb2_grpc.add_BatchJobServiceServicer_to_server(batch_job_service_pb2_grpc.BatchJobServiceServicer(), server)
    return SERVICE_NAME
