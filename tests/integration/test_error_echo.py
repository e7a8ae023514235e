"""Errors never echo a caller's whole value (issue #10 item 3).

A 5 MB value in each string field of each RPC (found by walking the descriptors) must come
back cut to :data:`VALUE_LIMIT` characters in the message and in every detail, and the
trailers must stay under gRPC's 8 KiB soft limit: a client must see the real error, never
``RESOURCE_EXHAUSTED: received metadata size exceeds ... limit``.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest

from rowforge.server.errors import MESSAGE_LIMIT, VALUE_LIMIT
from tests.support import fuzz
from tests.support.server import ServerProcess

#: 5 MB of text with a non-ASCII character every 10 (percent-encoding makes it 3 bytes each).
HUGE = ("x" * 9 + "é") * (5_000_000 // 11)
#: gRPC's default soft limit on received metadata, which clients enforce at random above it.
SOFT_LIMIT = 8192


@pytest.mark.timeout(600)  # 5 MB into Embed takes the built-in model ~30 s until item 2
async def test_a_huge_value_in_any_string_field_is_cut_in_the_error(server: ServerProcess
                                                                    ) -> None:
    cases = [(rpc, name, setter) for rpc in fuzz.api_rpcs()
             for name, setter in fuzz.string_fields(rpc.input)]
    assert len(cases) > 100, "the descriptor walk found too few string fields"
    gate = asyncio.Semaphore(2)
    echo = HUGE[:VALUE_LIMIT + 1]

    async def one(rpc: fuzz.Rpc, name: str, setter: fuzz.Setter) -> str | None:
        raw = fuzz.with_string(rpc, setter, HUGE).SerializeToString()
        async with gate, grpc.aio.insecure_channel(server.address) as channel:
            out = await fuzz.call_raw(channel, rpc, [raw], timeout=60)
        where = f"{rpc.path} {name}: {out.code.name}"
        if out.code in fuzz.BROKEN or "metadata size" in out.details:
            return f"{where} {out.details[:200]}"
        if out.code == grpc.StatusCode.OK:
            return None
        if out.trailer_bytes >= SOFT_LIMIT:
            return f"{where} trailers of {out.trailer_bytes} bytes"
        if len(out.details.encode()) > MESSAGE_LIMIT:
            return f"{where} a message of {len(out.details.encode())} bytes"
        if echo in out.details or echo.encode() in out.status_details:
            return f"{where} echoes more than {VALUE_LIMIT} characters of the value"
        return None

    problems = [p for p in await asyncio.gather(*(one(*c) for c in cases)) if p]
    assert not problems, f"{len(problems)} of {len(cases)} fields:\n" + "\n".join(problems)
