"""The client's error mapping: every gRPC status becomes its typed exception, with the
google.rpc details (ErrorInfo, BadRequest, RetryInfo, ResourceInfo) decoded; sync and async,
unary and mid-stream. Against an in-process fake server that aborts with rich statuses."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

import rowforge.clients.types as t
from rowforge.clients import AsyncRowForge, RetryConfig, RowForge
from rowforge.clients import exceptions as ex
from rowforge.clients.batch import exceptions as ajax
from rowforge.v1 import table_service_pb2 as tpb
from rowforge.v1 import table_service_pb2_grpc
from tests.support.fake_grpc import FakeServer, rich_status

S = grpc.StatusCode
EXPECTED = {
    S.CANCELLED: ex.RequestCancelledError,
    S.UNKNOWN: ex.ServerError,
    S.INVALID_ARGUMENT: ex.InvalidArgumentError,
    S.DEADLINE_EXCEEDED: ex.DeadlineExceededError,
    S.NOT_FOUND: ex.NotFoundError,
    S.ALREADY_EXISTS: ex.AlreadyExistsError,
    S.PERMISSION_DENIED: ex.PermissionDeniedError,
    S.RESOURCE_EXHAUSTED: ex.RateLimitError,
    S.FAILED_PRECONDITION: ex.FailedPreconditionError,
    S.ABORTED: ex.AbortedError,
    S.OUT_OF_RANGE: ex.OutOfRangeError,
    S.UNIMPLEMENTED: ex.UnimplementedError,
    S.INTERNAL: ex.ServerError,
    S.UNAVAILABLE: ex.UnavailableError,
    S.DATA_LOSS: ex.ServerError,
    S.UNAUTHENTICATED: ex.AuthenticationError,
}


class Failing(table_service_pb2_grpc.TableServiceServicer):
    """CreateTable aborts with the status named by ``table_id``
    (``CODE`` or ``CODE:REASON``); StreamAddRows streams one event first."""

    async def CreateTable(self, request, context):
        code, _, reason = request.table_id.partition(":")
        status = rich_status(
            S[code], f"failed with {code}", reason=reason or code,
            metadata={"tableId": request.table_id},
            violations=[("table_id", "is bad"), ("cols[0].dtype", "unknown")]
            if code == "INVALID_ARGUMENT" else (),
            retry_after=1.5 if code in ("RESOURCE_EXHAUSTED", "UNAVAILABLE") else None,
            resource=("table", request.table_id) if code == "NOT_FOUND" else None)
        await context.abort_with_status(status)

    async def DeleteTable(self, request, context):
        # A bare status: no google.rpc details at all.
        await context.abort(S.PERMISSION_DENIED, "plain denial")

    async def StreamAddRows(self, request, context):
        yield tpb.StreamAddRowsResponse(row_created=tpb.RowCreated(row_index=0, row_id="r1"))
        await context.abort_with_status(rich_status(
            S.UNAVAILABLE, "provider went away", reason="PROVIDER_UNAVAILABLE", retry_after=0.5))


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeServer]:
    with FakeServer([Failing()]) as server:
        yield server


def _schema(table_id: str) -> t.ActionTableSchemaCreate:
    return t.ActionTableSchemaCreate(id=table_id, cols=[t.ColumnSchemaCreate(id="a")])


NO_RETRY = RetryConfig(max_attempts=1)


@pytest.mark.parametrize("code", list(EXPECTED), ids=lambda c: c.name)
def test_each_status_maps_to_its_exception_sync(fake: FakeServer, code: grpc.StatusCode) -> None:
    with (
        RowForge(address=fake.address, retry=NO_RETRY) as client,
        pytest.raises(ex.RowForgeError) as info,
    ):
        client.table.create_action_table(_schema(code.name))
    err = info.value
    assert type(err) is EXPECTED[code]
    assert err.code == code and err.status_code == code.name
    assert err.reason == code.name
    assert err.message == f"failed with {code.name}"
    assert err.metadata == {"tableId": code.name}
    assert err.domain == "rowforge.dev"
    assert isinstance(err, ex.JamAIError)


@pytest.mark.parametrize("code", list(EXPECTED), ids=lambda c: c.name)
async def test_each_status_maps_to_its_exception_async(fake: FakeServer,
                                                       code: grpc.StatusCode) -> None:
    async with AsyncRowForge(address=fake.address, retry=NO_RETRY) as client:
        with pytest.raises(ex.RowForgeError) as info:
            await client.table.create_action_table(_schema(code.name))
    assert type(info.value) is EXPECTED[code]
    assert info.value.reason == code.name


def test_details_are_decoded(fake: FakeServer) -> None:
    with RowForge(address=fake.address, retry=NO_RETRY) as client:
        with pytest.raises(ex.InvalidArgumentError) as bad:
            client.table.create_action_table(_schema("INVALID_ARGUMENT"))
        with pytest.raises(ex.RateLimitError) as limited:
            client.table.create_action_table(_schema("RESOURCE_EXHAUSTED"))
        with pytest.raises(ex.NotFoundError) as missing:
            client.table.create_action_table(_schema("NOT_FOUND"))
    assert bad.value.field_violations == [("table_id", "is bad"), ("cols[0].dtype", "unknown")]
    assert isinstance(bad.value, ValueError)
    assert limited.value.retry_after == pytest.approx(1.5)
    assert missing.value.resource_type == "table"
    assert missing.value.resource_name == "NOT_FOUND"
    assert "NOT_FOUND" in str(missing.value) and "failed with NOT_FOUND" in str(missing.value)


@pytest.mark.parametrize(("target", "cls"), [
    ("NOT_FOUND:TABLE_NOT_FOUND", ex.TableNotFoundError),
    ("NOT_FOUND:ROW_NOT_FOUND", ex.RowNotFoundError),
    ("NOT_FOUND:JOB_NOT_FOUND", ex.JobNotFoundError),
    ("NOT_FOUND:SOMETHING_NEW", ex.NotFoundError),
    ("INVALID_ARGUMENT:INVALID_WHERE", ex.InvalidWhereError),
    ("INVALID_ARGUMENT:CONTEXT_WINDOW_EXCEEDED", ex.ContextWindowExceededError),
    ("ALREADY_EXISTS:TABLE_ALREADY_EXISTS", ex.TableAlreadyExistsError),
    # A reason registered under another code does not pick that code's class.
    ("INTERNAL:TABLE_NOT_FOUND", ex.ServerError),
])
def test_registry_keys_on_code_and_reason(fake: FakeServer, target: str,
                                          cls: type[ex.RowForgeError]) -> None:
    with (
        RowForge(address=fake.address, retry=NO_RETRY) as client,
        pytest.raises(ex.RowForgeError) as info,
    ):
        client.table.create_action_table(_schema(target))
    assert type(info.value) is cls
    assert info.value.reason == target.partition(":")[2]
    assert isinstance(info.value, EXPECTED[info.value.code])


def test_status_without_details_is_still_typed(fake: FakeServer) -> None:
    with (
        RowForge(address=fake.address, retry=NO_RETRY) as client,
        pytest.raises(ex.PermissionDeniedError) as info,
    ):
        client.table.delete_table("action", "x")
    assert info.value.message == "plain denial"
    assert info.value.reason == "" and info.value.field_violations == []


def test_error_in_the_middle_of_a_stream_sync(fake: FakeServer) -> None:
    with RowForge(address=fake.address) as client:
        chunks = []
        stream = client.table.add_table_rows("action", t.MultiRowAddRequest(
            table_id="x", data=[{"a": "1"}], stream=True))
        with pytest.raises(ex.UnavailableError) as info:
            for chunk in stream:
                chunks.append(chunk)
    assert [c.event for c in chunks] == ["row_created"]
    assert info.value.reason == "PROVIDER_UNAVAILABLE"
    assert info.value.retry_after == pytest.approx(0.5)


async def test_error_in_the_middle_of_a_stream_async(fake: FakeServer) -> None:
    async with AsyncRowForge(address=fake.address) as client:
        chunks = []
        with pytest.raises(ex.UnavailableError):
            async for chunk in await client.table.add_table_rows("action", t.MultiRowAddRequest(
                    table_id="x", data=[{"a": "1"}], stream=True)):
                chunks.append(chunk)
    assert [c.row_id for c in chunks] == ["r1"]


def test_unreachable_server_is_unavailable() -> None:
    with (
        RowForge(address="127.0.0.1:9", retry=NO_RETRY, timeout=5) as client,
        pytest.raises(ex.UnavailableError),
    ):
        client.model_ids()


def test_seed_exception_names_are_the_typed_classes() -> None:
    assert ajax.AjaxAiApiError is ex.RowForgeError
    assert issubclass(ex.AuthenticationError, ajax.AjaxAiAuthorizationError)
    assert issubclass(ex.PermissionDeniedError, ajax.AjaxAiAuthorizationError)
    assert ajax.AjaxAiRateLimitError is ex.RateLimitError
    assert issubclass(ex.JobNotFoundError, ajax.AjaxAiJobNotFoundError)
    for cls in (ex.ServerError, ex.UnavailableError, ex.DeadlineExceededError):
        assert issubclass(cls, ajax.AjaxAiServerError)
    assert ex.error_class(S.NOT_FOUND, "JOB_NOT_FOUND") is ex.JobNotFoundError
    assert ex.error_class(S.OK) is ex.RowForgeError


def test_client_side_mistakes_are_invalid_argument_without_a_call(fake: FakeServer) -> None:
    before = len(fake.calls)
    with (
        RowForge(address=fake.address) as client,
        pytest.raises(ex.InvalidArgumentError) as info,
    ):
        client.table.get_table("spreadsheet", "x")
        assert info.value.field_violations[0][0] == "table_type"
        with pytest.raises(ex.InvalidArgumentError):
            client.table.delete_table_rows("action", t.MultiRowDeleteRequest(table_id="x"))
        with pytest.raises(ex.InvalidArgumentError, match="upload"):
            client.table.add_table_rows("action", t.MultiRowAddRequest(
                table_id="x", data=[{"a": b"raw bytes"}], stream=False))
        with pytest.raises(ex.InvalidArgumentError):
            client.model_ids(capabilities=["telepathy"])
    assert len(fake.calls) == before


class WithRequestIds(table_service_pb2_grpc.TableServiceServicer):
    """GetTable fails with the request id in the trailers, DeleteTable in the headers,
    RenameTable without one."""

    async def GetTable(self, request, context):
        context.set_trailing_metadata((("x-request-id", "req-trailing-1"),))
        await context.abort(S.NOT_FOUND, "no such table")

    async def DeleteTable(self, request, context):
        await context.send_initial_metadata((("x-request-id", "req-initial-2"),))
        await context.abort(S.FAILED_PRECONDITION, "in use")

    async def RenameTable(self, request, context):
        await context.abort(S.INTERNAL, "boom")


def test_the_request_id_of_a_failed_call_is_on_the_exception() -> None:
    with FakeServer([WithRequestIds()]) as fake, \
            RowForge(address=fake.address, retry=RetryConfig(max_attempts=1)) as client:
        with pytest.raises(ex.NotFoundError) as trailing:
            client.table.get_table("action", "t")
        with pytest.raises(ex.FailedPreconditionError) as initial:
            client.table.delete_table("action", "t")
        with pytest.raises(ex.ServerError) as none:
            client.table.rename_table("action", "a", "b")
    assert trailing.value.request_id == "req-trailing-1"
    assert initial.value.request_id == "req-initial-2"
    assert none.value.request_id is None


async def test_the_async_client_reads_the_request_id_too() -> None:
    with FakeServer([WithRequestIds()]) as fake:
        async with AsyncRowForge(address=fake.address,
                                 retry=RetryConfig(max_attempts=1)) as client:
            with pytest.raises(ex.NotFoundError) as caught:
                await client.table.get_table("action", "t")
    assert caught.value.request_id == "req-trailing-1"
