"""Retries: idempotent calls (Get/List/Export/Download...) are retried on UNAVAILABLE with
backoff (honouring RetryInfo), nothing else is; streams only before their first message;
deadlines hold."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import grpc
import pytest

import rowforge.clients.types as t
from rowforge.clients import AsyncRowForge, RetryConfig, RowForge
from rowforge.clients import exceptions as ex
from rowforge.clients.config import RetryConfig as Retry
from rowforge.v1 import table_service_pb2 as tpb
from rowforge.v1 import table_service_pb2_grpc
from tests.support.fake_grpc import FakeServer, rich_status

FAST = RetryConfig(max_attempts=4, initial_backoff=0.01, max_backoff=0.05, jitter=0.0)


class Flaky(table_service_pb2_grpc.TableServiceServicer):
    """Fails the first ``failures`` calls of each RPC with ``code``."""

    def __init__(self) -> None:
        self.failures = 0
        self.code = grpc.StatusCode.UNAVAILABLE
        self.retry_after: float | None = None
        self.counts: dict[str, int] = {}
        self.sleep = 0.0
        self.time_remaining: float | None = None

    def reset(self, failures: int, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE,
              retry_after: float | None = None, sleep: float = 0.0) -> None:
        self.failures, self.code, self.retry_after, self.sleep = failures, code, retry_after, sleep
        self.counts = {}

    async def _maybe_fail(self, name: str, context: grpc.aio.ServicerContext) -> None:
        n = self.counts[name] = self.counts.get(name, 0) + 1
        if n <= self.failures:
            await context.abort_with_status(rich_status(
                self.code, "try later", reason="STORAGE_UNAVAILABLE",
                retry_after=self.retry_after))

    async def GetTable(self, request, context):
        await self._maybe_fail("GetTable", context)
        self.time_remaining = context.time_remaining()
        await asyncio.sleep(self.sleep)
        return tpb.GetTableResponse(table=tpb.Table(id=request.table_id,
                                                    table_type=request.table_type))

    async def CreateTable(self, request, context):
        await self._maybe_fail("CreateTable", context)
        return tpb.CreateTableResponse(table=tpb.Table(id=request.table_id))

    async def ExportRows(self, request, context):
        await self._maybe_fail("ExportRows", context)
        yield tpb.ExportRowsResponse(chunk=b"ID,a\r\n")
        if request.where == "fail-after-first":
            await context.abort_with_status(rich_status(grpc.StatusCode.UNAVAILABLE, "gone"))
        yield tpb.ExportRowsResponse(chunk=b"r1,x\r\n")


@pytest.fixture(scope="module")
def servicer() -> Flaky:
    return Flaky()


@pytest.fixture(scope="module")
def fake(servicer: Flaky) -> Iterator[FakeServer]:
    with FakeServer([servicer]) as server:
        yield server


def test_idempotent_call_is_retried_until_it_succeeds(fake: FakeServer, servicer: Flaky) -> None:
    servicer.reset(failures=2)
    with RowForge(address=fake.address, retry=FAST) as client:
        assert client.table.get_table("action", "t1").id == "t1"
    assert servicer.counts["GetTable"] == 3


async def test_idempotent_call_is_retried_async(fake: FakeServer, servicer: Flaky) -> None:
    servicer.reset(failures=3)
    async with AsyncRowForge(address=fake.address, retry=FAST) as client:
        assert (await client.table.get_table("chat", "t2")).id == "t2"
    assert servicer.counts["GetTable"] == 4


def test_retries_stop_after_max_attempts(fake: FakeServer, servicer: Flaky) -> None:
    servicer.reset(failures=10)
    with (
        RowForge(address=fake.address, retry=FAST) as client,
        pytest.raises(ex.UnavailableError) as info,
    ):
        client.table.get_table("action", "t1")
    assert servicer.counts["GetTable"] == FAST.max_attempts
    assert info.value.reason == "STORAGE_UNAVAILABLE"


def test_non_idempotent_call_is_not_retried(fake: FakeServer, servicer: Flaky) -> None:
    servicer.reset(failures=1)
    with (
        RowForge(address=fake.address, retry=FAST) as client,
        pytest.raises(ex.UnavailableError),
    ):
        client.table.create_action_table(t.ActionTableSchemaCreate(id="t3"))
    assert servicer.counts["CreateTable"] == 1


def test_other_codes_are_not_retried(fake: FakeServer, servicer: Flaky) -> None:
    servicer.reset(failures=1, code=grpc.StatusCode.INTERNAL)
    with RowForge(address=fake.address, retry=FAST) as client, pytest.raises(ex.ServerError):
        client.table.get_table("action", "t1")
    assert servicer.counts["GetTable"] == 1


def test_server_retry_delay_is_honoured(fake: FakeServer, servicer: Flaky) -> None:
    servicer.reset(failures=1, retry_after=0.4)
    with RowForge(address=fake.address, retry=FAST) as client:
        started = time.monotonic()
        client.table.get_table("action", "t1")
    assert time.monotonic() - started >= 0.4
    assert servicer.counts["GetTable"] == 2


def test_stream_is_retried_only_before_its_first_message(fake: FakeServer,
                                                         servicer: Flaky) -> None:
    servicer.reset(failures=2)
    with RowForge(address=fake.address, retry=FAST) as client:
        assert client.table.export_table_data("action", "t1") == b"ID,a\r\nr1,x\r\n"
        assert servicer.counts["ExportRows"] == 3
        servicer.reset(failures=0)
        with pytest.raises(ex.UnavailableError):
            client.table.export_table_data("action", "t1", where="fail-after-first")
    # Half a file must not be stitched to a retry: one call only.
    assert servicer.counts["ExportRows"] == 1


def test_deadline_is_sent_and_enforced(fake: FakeServer, servicer: Flaky) -> None:
    servicer.reset(failures=0)
    with RowForge(address=fake.address, retry=FAST, timeout=0.5) as client:
        # Connect first: on a loaded machine the connection alone can outlast the deadline,
        # and the call would then never reach the server.
        client.table.get_table("action", "t1")
        servicer.reset(failures=0, sleep=3.0)
        started = time.monotonic()
        with pytest.raises(ex.DeadlineExceededError):
            client.table.get_table("action", "t1")
    assert time.monotonic() - started < 2.5
    assert servicer.counts["GetTable"] == 1
    assert servicer.time_remaining is not None and 0 < servicer.time_remaining <= 0.6


async def test_deadline_async(fake: FakeServer, servicer: Flaky) -> None:
    servicer.reset(failures=0, sleep=2.0)
    async with AsyncRowForge(address=fake.address, retry=FAST, timeout=0.3) as client:
        with pytest.raises(ex.DeadlineExceededError):
            await client.table.get_table("action", "t1")


def test_retries_give_up_when_the_deadline_would_pass(fake: FakeServer, servicer: Flaky) -> None:
    slow = RetryConfig(max_attempts=5, initial_backoff=0.01, jitter=0.0)
    with RowForge(address=fake.address, retry=slow, timeout=1.0) as client:
        servicer.reset(failures=0)
        client.table.get_table("action", "t1")  # connected before the timed call
        servicer.reset(failures=10, retry_after=3.0)
        started = time.monotonic()
        with pytest.raises(ex.UnavailableError):
            client.table.get_table("action", "t1")
    assert time.monotonic() - started < 1.0
    assert servicer.counts["GetTable"] == 1


def test_backoff_grows_and_is_capped() -> None:
    policy = Retry(initial_backoff=0.1, multiplier=2.0, max_backoff=0.5, jitter=0.0)
    assert [policy.backoff(n) for n in (1, 2, 3, 4)] == pytest.approx([0.1, 0.2, 0.4, 0.5])
    assert policy.backoff(1, server_hint=1.0) == pytest.approx(1.0)
    jittery = Retry(initial_backoff=1.0, jitter=0.2)
    assert all(0.8 <= jittery.backoff(1) <= 1.2 for _ in range(50))
