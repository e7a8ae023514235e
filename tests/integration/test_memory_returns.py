"""Memory a burst of large requests took goes back to the system once they are done.

Ten 30 MB requests (refused, as a hostile client's would be) raised the server's RSS by
300+ MB and it never came down (reference cycles held the requests until a rare full
collection; the heap kept the freed pages). With the periodic trim it returns to within 2x
of its idle size.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import grpc

from rowforge.v1 import table_service_pb2 as tpb
from tests.support.server import ServerProcess


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_rss_returns_after_large_requests(tmp_path: Path) -> None:
    with ServerProcess(tmp_path, env={"ROWFORGE_MEMORY_TRIM_S": "0.5"}) as server:
        assert server.process is not None
        pid = server.process.pid
        big = tpb.GetTableRequest(table_id="x" * (30 << 20)).SerializeToString()
        with grpc.insecure_channel(server.address, options=[
                ("grpc.max_send_message_length", 64 << 20)]) as channel:
            get_table = channel.unary_unary("/rowforge.v1.TableService/GetTable")
            with contextlib.suppress(grpc.RpcError):  # warm: first-call imports and buffers
                get_table(tpb.GetTableRequest(table_id="warm").SerializeToString(),
                          metadata=(("x-project-id", "p"),), timeout=30)
            before = rss_mb(pid)
            peak = before
            for _ in range(10):
                try:
                    get_table(big, metadata=(("x-project-id", "p"),), timeout=60)
                except grpc.RpcError as exc:
                    assert exc.code() in (grpc.StatusCode.INVALID_ARGUMENT,
                                          grpc.StatusCode.NOT_FOUND)
                peak = max(peak, rss_mb(pid))
            deadline = time.monotonic() + 30
            while rss_mb(pid) > 2 * before and time.monotonic() < deadline:
                time.sleep(0.5)
            idle = rss_mb(pid)
    assert idle <= 2 * before, (f"RSS {before:.0f} MB before, {peak:.0f} MB peak, "
                                f"{idle:.0f} MB idle")
