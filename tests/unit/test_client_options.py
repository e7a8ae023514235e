"""Per-call options: ``with_options(timeout=...)`` (None really clears the deadline) and extra
call metadata, on a client sharing the original's channel; the original keeps its own."""

from __future__ import annotations

import pytest

from rowforge.clients import AsyncRowForge, RowForge
from rowforge.v1 import common_pb2, table_service_pb2_grpc
from rowforge.v1 import table_service_pb2 as tpb
from tests.support.fake_grpc import FakeServer


class Deadlines(table_service_pb2_grpc.TableServiceServicer):
    def __init__(self) -> None:
        self.remaining: list[float | None] = []

    async def GetTable(self, request, context):
        self.remaining.append(context.time_remaining())
        return tpb.GetTableResponse(table=tpb.Table(id=request.table_id,
                                                    table_type=common_pb2.TABLE_TYPE_ACTION))


def test_timeouts_and_metadata_per_call() -> None:
    servicer = Deadlines()
    with FakeServer([servicer]) as fake, RowForge(address=fake.address, timeout=300) as client:
        client.table.get_table("action", "a")
        client.with_options(timeout=None).table.get_table("action", "b")
        client.with_options(timeout=5).table.get_table("action", "c")
        traced = client.with_options(metadata={"x-trace-id": "abc"})
        traced.table.get_table("action", "d")
        client.table.get_table("action", "e")
        calls = fake.calls
    first, cleared, short, _, _ = servicer.remaining
    # The wire timeout has a few significant digits: older grpcio sends "300S" for 299.99 s
    # and the server can see up to a second more than the client asked for.
    assert first is not None and 290 < first <= 301
    assert cleared is None  # no deadline at all, not the default one
    assert short is not None and short <= 5.5
    assert calls[3].metadata.get("x-trace-id") == "abc"
    assert "x-trace-id" not in calls[4].metadata  # the original client is unchanged
    assert client.config.timeout == 300


async def test_async_with_options() -> None:
    servicer = Deadlines()
    with FakeServer([servicer]) as fake:
        async with AsyncRowForge(address=fake.address) as client:
            await client.with_options(timeout=None, metadata={"x-a": "1"}).table.get_table(
                "action", "a")
            calls = fake.calls
    assert servicer.remaining == [None] and calls[0].metadata.get("x-a") == "1"


def test_bad_options_are_refused() -> None:
    with RowForge(address="127.0.0.1:9") as client:
        with pytest.raises(ValueError, match="positive"):
            client.with_options(timeout=0)
        with pytest.raises(ValueError, match="not one the client sets"):
            client.with_options(metadata={"authorization": "Bearer x"})
        with pytest.raises(ValueError, match="lowercase"):
            client.with_options(metadata={"X-Trace": "1"})
