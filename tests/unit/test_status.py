"""Domain errors become google.rpc.Status with the right code and details."""

from __future__ import annotations

from google.rpc import code_pb2, error_details_pb2

from rowforge.server.errors import (
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Violations,
)
from rowforge.server.status import to_rpc_status


def unpack(status, cls):  # type: ignore[no-untyped-def]
    for detail in status.details:
        if detail.Is(cls.DESCRIPTOR):
            out = cls()
            detail.Unpack(out)
            return out
    return None


def test_invalid_argument_carries_field_violations() -> None:
    v = Violations()
    v.check(False, "limit", "must be at most 100")
    v.check(True, "offset", "never")
    v.check(False, "where", "unknown column 'x'")
    try:
        v.raise_if_any()
    except InvalidArgument as err:
        status = to_rpc_status(err)
    assert status.code == code_pb2.INVALID_ARGUMENT
    bad = unpack(status, error_details_pb2.BadRequest)
    assert [(f.field, f.description) for f in bad.field_violations] == [
        ("limit", "must be at most 100"), ("where", "unknown column 'x'")]
    info = unpack(status, error_details_pb2.ErrorInfo)
    assert info.reason == "INVALID_ARGUMENT" and info.domain


def test_rate_limit_carries_retry_info() -> None:
    status = to_rpc_status(ResourceExhausted("slow down", retry_after=2.5,
                                             metadata={"model": "m"}))
    assert status.code == code_pb2.RESOURCE_EXHAUSTED
    retry = unpack(status, error_details_pb2.RetryInfo)
    assert retry.retry_delay.seconds == 2 and retry.retry_delay.nanos == 500_000_000
    assert unpack(status, error_details_pb2.ErrorInfo).metadata["model"] == "m"


def test_not_found_carries_resource_info() -> None:
    status = to_rpc_status(NotFound("table 't' not found", reason="TABLE_NOT_FOUND",
                                    resource_type="table", resource_name="t"))
    assert status.code == code_pb2.NOT_FOUND
    assert unpack(status, error_details_pb2.ResourceInfo).resource_name == "t"
    assert unpack(status, error_details_pb2.ErrorInfo).reason == "TABLE_NOT_FOUND"
