"""Two servers on one machine run Python cells at the same time without harming each other.

As root, cells run as unprivileged uids and a starting worker kills whatever runs as its uid
(what a dead predecessor left). Servers that shared uids killed each other's cells: a cell
running on one server died when the other server's sandbox started. Each server now claims
its own uids.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import grpc

from rowforge.v1 import table_service_pb2_grpc
from tests.conftest import assert_no_unhandled_errors
from tests.integration.generation_support import DONE, add_rows, create_table, input_col, python_col
from tests.support.server import ServerProcess

SLOW = "import time\ntime.sleep(float(row['s']))\nrow['out'] = 'ran ' + row['s']\n"


async def run_cell(server: ServerProcess, seconds: float) -> object:
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = table_service_pb2_grpc.TableServiceStub(channel)
        md = (("x-project-id", f"p{uuid.uuid4().hex[:8]}"),)
        await create_table(stub, md, "t", [input_col("s"), python_col("out", SLOW)])
        reply = await add_rows(stub, md, "t", [{"s": str(seconds)}])
        return reply.rows[0].columns["out"]


async def test_a_second_servers_sandbox_does_not_kill_the_firsts_cells(tmp_path: Path) -> None:
    env = {"ROWFORGE_SANDBOX_WORKERS": "2", "ROWFORGE_SANDBOX_TIMEOUT_S": "60"}
    with ServerProcess(tmp_path / "a", env=env) as first, \
            ServerProcess(tmp_path / "b", env=env) as second:
        warm = await run_cell(first, 0)  # the first server's workers are up
        assert warm.status == DONE, warm
        # A long cell on the first server while the second server's sandbox starts.
        slow = asyncio.create_task(run_cell(first, 8))
        await asyncio.sleep(2)
        quick = await run_cell(second, 0)
        assert quick.status == DONE, quick
        cell = await slow
        assert cell.status == DONE, cell
        assert cell.value.string_value == "ran 8"
    assert_no_unhandled_errors(first)
    assert_no_unhandled_errors(second)
