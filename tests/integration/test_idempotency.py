"""AddRows and ImportRows take an idempotency key: a retry with the same key and request gets
the first response and adds nothing; the same key with another request is refused; a failed
call releases its key; concurrent calls with one key never add the rows twice."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from rowforge.cell_values import row_values_to_pb
from rowforge.v1 import table_service_pb2 as pb
from tests.integration.generation_support import (
    ACTION,
    create_table,
    input_col,
    list_rows,
    llm_col,
    md,
    stub,
)
from tests.support.status import fails

__all__ = ["md", "stub"]  # fixtures


def add(stub: Any, md: Any, key: str, *rows: dict[str, Any]) -> Any:
    return stub.AddRows(pb.AddRowsRequest(
        table_type=ACTION, table_id="t", idempotency_key=key, legacy_values=False,
        rows=[row_values_to_pb(r) for r in rows]), metadata=md)


async def test_add_rows_replays_the_first_response(stub, md):
    await create_table(stub, md, "t", [input_col("q"), llm_col("a", "Say ${q}")])
    first = await add(stub, md, "k1", {"q": "one"}, {"q": "two"})
    again = await add(stub, md, "k1", {"q": "one"}, {"q": "two"})
    assert [r.row_id for r in again.rows] == [r.row_id for r in first.rows]
    assert again == first
    assert (await list_rows(stub, md, "t")).total == 2

    reason, _, fields = await fails(add(stub, md, "k1", {"q": "other"}),
                                    grpc.StatusCode.INVALID_ARGUMENT)
    assert reason == "IDEMPOTENCY_KEY_REUSED" and "idempotency_key" in fields
    _, _, fields = await fails(add(stub, md, "k" * 201, {"q": "x"}),
                               grpc.StatusCode.INVALID_ARGUMENT)
    assert "at most 200" in fields["idempotency_key"]
    # No key: every call adds.
    await add(stub, md, "", {"q": "three"})
    await add(stub, md, "", {"q": "three"})
    assert (await list_rows(stub, md, "t")).total == 4


async def test_a_failed_call_releases_its_key(stub, md):
    await create_table(stub, md, "t", [input_col("n", "int")])
    await fails(add(stub, md, "k2", {"n": "not a number"}), grpc.StatusCode.INVALID_ARGUMENT)
    fixed = await add(stub, md, "k2", {"n": 7})  # same key, corrected request
    assert len(fixed.rows) == 1 and (await list_rows(stub, md, "t")).total == 1


async def test_concurrent_calls_with_one_key_add_once(stub, md):
    await create_table(stub, md, "t", [input_col("q"), llm_col("a", "Say ${q}")])
    outcomes = await asyncio.gather(*(add(stub, md, "k3", {"q": "same"}) for _ in range(4)),
                                    return_exceptions=True)
    done = [o for o in outcomes if isinstance(o, pb.AddRowsResponse)]
    refused = [o for o in outcomes if not isinstance(o, pb.AddRowsResponse)]
    assert done and {d.rows[0].row_id for d in done} == {done[0].rows[0].row_id}
    for err in refused:
        assert err.code() == grpc.StatusCode.ABORTED, err  # still running: retry
    assert (await list_rows(stub, md, "t")).total == 1


async def test_import_rows_replays_too(stub, md):
    await create_table(stub, md, "t", [input_col("q")])

    def requests(key: str, data: bytes) -> Any:
        async def gen() -> Any:
            yield pb.ImportRowsRequest(metadata=pb.ImportRowsMetadata(
                table_type=ACTION, table_id="t", idempotency_key=key))
            yield pb.ImportRowsRequest(chunk=data)
        return gen()

    first = await stub.ImportRows(requests("i1", b"q\na\nb\n"), metadata=md)
    again = await stub.ImportRows(requests("i1", b"q\na\nb\n"), metadata=md)
    assert first.row_count == again.row_count == 2
    assert (await list_rows(stub, md, "t")).total == 2
    reason, _, fields = await fails(stub.ImportRows(requests("i1", b"q\nc\n"), metadata=md),
                                    grpc.StatusCode.INVALID_ARGUMENT)
    assert reason == "IDEMPOTENCY_KEY_REUSED" and "metadata.idempotency_key" in fields
