"""Domain errors become google.rpc.Status with the right code and details."""

from __future__ import annotations

from google.rpc import code_pb2, error_details_pb2

from rowforge.server.errors import (
    MESSAGE_LIMIT,
    VALUE_LIMIT,
    FieldViolation,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Violations,
    clip,
    shown,
)
from rowforge.server.status import MAX_STATUS_BYTES, MAX_VIOLATIONS, to_rpc_status
from tests.support.status import unpack


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


# -- echoed values stay small (issue #10 item 3) --------------------------------------------

HUGE = "é" * 5_000_000


def test_clip_and_shown_cut_values_with_an_ellipsis() -> None:
    assert clip("abc") == "abc"
    assert clip("x" * 500) == "x" * VALUE_LIMIT + "…"
    assert shown("x" * 500) == repr("x" * VALUE_LIMIT + "…")
    assert shown("it's") == repr("it's")
    assert len(shown(list(range(100_000)))) <= VALUE_LIMIT + 1
    assert len(shown(b"\x00" * 100_000)) <= VALUE_LIMIT + 1


def test_error_messages_are_cut_where_the_value_was_formatted_in() -> None:
    err = NotFound(f"table {'x' * 5_000_000!r} not found")
    assert err.message == "table '" + "x" * (VALUE_LIMIT - 1) + "… not found"
    spaced = InvalidArgument("where: " + "a b " * 1_000_000)
    assert len(spaced.message.encode()) <= MESSAGE_LIMIT


def test_non_ascii_messages_are_cut_by_their_utf8_size() -> None:
    err = InvalidArgument("bad value " + "é " * 10_000)
    assert len(err.message.encode()) <= MESSAGE_LIMIT
    err.message.encode().decode()  # never a cut character


def test_details_stay_small_whatever_the_error_carries() -> None:
    violations = [FieldViolation(f"input[{i}]" + ("x" * 1000 if i < 50 else ""), HUGE)
                  for i in range(500)]
    err = InvalidArgument(HUGE, field_violations=violations, metadata={HUGE: HUGE, "k": HUGE},
                          resource_type="table", resource_name=HUGE)
    status = to_rpc_status(err)
    assert status.ByteSize() <= MAX_STATUS_BYTES
    bad = unpack(status, error_details_pb2.BadRequest)
    assert bad.field_violations[0].field.startswith("input[0]")
    assert bad.field_violations[-1].description.endswith("more violations not shown")
    assert all(len(v) <= VALUE_LIMIT + 1 for v in err.metadata.values())
    assert unpack(status, error_details_pb2.ErrorInfo).reason == "INVALID_ARGUMENT"


def test_few_small_violations_are_all_sent() -> None:
    err = InvalidArgument("bad", field_violations=[FieldViolation(f"f{i}", "bad")
                                                   for i in range(MAX_VIOLATIONS)])
    bad = unpack(to_rpc_status(err), error_details_pb2.BadRequest)
    assert [v.field for v in bad.field_violations] == [f"f{i}" for i in range(MAX_VIOLATIONS)]


def test_quota_failures_and_request_ids_are_details() -> None:
    from rowforge.server.quotas import QuotaExceeded

    status = to_rpc_status(QuotaExceeded("tables", "p1", 2, 2, 1, "tables"), "req-1")
    assert status.code == code_pb2.RESOURCE_EXHAUSTED
    failure = unpack(status, error_details_pb2.QuotaFailure)
    assert failure is not None and failure.violations[0].subject == "project:p1"
    assert unpack(status, error_details_pb2.ErrorInfo).reason == "QUOTA_EXCEEDED"
    assert unpack(status, error_details_pb2.RequestInfo).request_id == "req-1"
    assert unpack(to_rpc_status(QuotaExceeded("tables", "p1", 2, 2, 1, "tables")),
                  error_details_pb2.RequestInfo) is None
