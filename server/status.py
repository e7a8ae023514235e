"""The one mapping from domain errors to gRPC statuses with ``google.rpc`` details."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from rowforge.server.errors import DOMAIN, RowforgeError


def _pack(message) -> any_pb2.Any:  # type: ignore[no-untyped-def]
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def to_rpc_status(err: RowforgeError) -> status_pb2.Status:
    """A ``google.rpc.Status`` with ErrorInfo always, plus BadRequest / RetryInfo /
    ResourceInfo when the error carries them."""
    details = [_pack(error_details_pb2.ErrorInfo(reason=err.reason, domain=DOMAIN,
                                                 metadata=err.metadata))]
    if err.field_violations:
        details.append(_pack(error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
            for v in err.field_violations
        ])))
    if err.retry_after is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(max(err.retry_after, 0.0) * 1e9))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    if err.resource_type or err.resource_name:
        details.append(_pack(error_details_pb2.ResourceInfo(
            resource_type=err.resource_type, resource_name=err.resource_name,
            description=err.message)))
    return status_pb2.Status(code=getattr(code_pb2, err.code), message=err.message,
                             details=details)


def to_grpc_status(err: RowforgeError) -> grpc.Status:
    return rpc_status.to_status(to_rpc_status(err))
