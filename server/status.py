"""The one mapping from domain errors to gRPC statuses with ``google.rpc`` details.

Details stay small whatever the error carries: at most :data:`MAX_VIOLATIONS` field
violations, and the serialized status (it travels base64-encoded in the
``grpc-status-details-bin`` trailer, next to the percent-encoded message) within
:data:`MAX_STATUS_BYTES`, so a client never sees "metadata size exceeds limit" instead of
the error. Values inside are already cut by :mod:`rowforge.server.errors`.
"""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from rowforge.server.errors import DOMAIN, FieldViolation, RowforgeError

#: Field violations sent with one error; the rest are counted in a last one.
MAX_VIOLATIONS = 20
#: Serialized ``google.rpc.Status`` (message included): 4 KiB once base64-encoded.
MAX_STATUS_BYTES = 3072


def _pack(message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def to_rpc_status(err: RowforgeError, request_id: str = "") -> status_pb2.Status:
    """A ``google.rpc.Status`` with ErrorInfo always, plus BadRequest / RetryInfo /
    ResourceInfo when the error carries them and RequestInfo when ``request_id`` is given,
    within :data:`MAX_STATUS_BYTES`."""
    keep = min(len(err.field_violations), MAX_VIOLATIONS)
    while True:
        status = _build(err, _shown(err.field_violations, keep), request_id=request_id)
        if status.ByteSize() <= MAX_STATUS_BYTES or keep == 0:
            break
        keep //= 2
    if status.ByteSize() > MAX_STATUS_BYTES:  # pathological metadata: keep reason and domain
        status = _build(err, _shown(err.field_violations, 0), metadata=False,
                        request_id=request_id)
    return status


def _shown(violations: list[FieldViolation], keep: int) -> list[FieldViolation]:
    """The first ``keep`` violations, then one counting those left out."""
    if len(violations) <= keep:
        return violations
    hidden = len(violations) - keep
    return [*violations[:keep], FieldViolation("…", f"{hidden} more violations not shown")]


def _build(err: RowforgeError, violations: list[FieldViolation], *,
           metadata: bool = True, request_id: str = "") -> status_pb2.Status:
    details = [_pack(error_details_pb2.ErrorInfo(
        reason=err.reason, domain=DOMAIN, metadata=err.metadata if metadata else {}))]
    if violations:
        details.append(_pack(error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
            for v in violations
        ])))
    if err.retry_after is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(max(err.retry_after, 0.0) * 1e9))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    if err.resource_type or err.resource_name:
        details.append(_pack(error_details_pb2.ResourceInfo(
            resource_type=err.resource_type, resource_name=err.resource_name,
            description=err.message)))
    subject, description = getattr(err, "subject", ""), getattr(err, "description", "")
    if subject:  # a QuotaExceeded: which quota
        details.append(_pack(error_details_pb2.QuotaFailure(violations=[
            error_details_pb2.QuotaFailure.Violation(subject=subject,
                                                     description=description)])))
    if request_id:
        details.append(_pack(error_details_pb2.RequestInfo(request_id=request_id)))
    return status_pb2.Status(code=getattr(code_pb2, err.code), message=err.message,
                             details=details)


def to_grpc_status(err: RowforgeError, request_id: str = "") -> grpc.Status:
    return rpc_status.to_status(to_rpc_status(err, request_id))
