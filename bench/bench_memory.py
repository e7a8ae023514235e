"""Server RSS after a burst of large requests, with the periodic trim off and on.

Each run starts a real server, warms it with one call, sends ten 30 MB GetTable requests
(refused, as a hostile client's would be) and reads the server's RSS before, right after,
and after ``--idle`` seconds. The trim off (``memory_trim_s = 0``) is the baseline, measured
in the same invocation; medians of ``--runs`` runs.

Run: ``.venv/bin/python bench/bench_memory.py [--runs 3] [--idle 4]``
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _machine import print_machine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc

from rowforge.v1 import table_service_pb2 as tpb
from tests.support.server import ServerProcess

MD = (("x-project-id", "p"),)


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def run(trim_s: str, idle_s: float) -> tuple[float, float, float]:
    big = tpb.GetTableRequest(table_id="x" * (30 << 20)).SerializeToString()
    with tempfile.TemporaryDirectory() as tmp, \
            ServerProcess(Path(tmp), env={"ROWFORGE_MEMORY_TRIM_S": trim_s}) as server:
        assert server.process is not None
        pid = server.process.pid
        with grpc.insecure_channel(server.address, options=[
                ("grpc.max_send_message_length", 64 << 20)]) as channel:
            get_table = channel.unary_unary("/rowforge.v1.TableService/GetTable")
            with contextlib.suppress(grpc.RpcError):
                get_table(tpb.GetTableRequest(table_id="warm").SerializeToString(),
                          metadata=MD, timeout=30)
            before = rss_mb(pid)
            for _ in range(10):
                with contextlib.suppress(grpc.RpcError):
                    get_table(big, metadata=MD, timeout=60)
            after = rss_mb(pid)
            time.sleep(idle_s)
            return before, after, rss_mb(pid)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--idle", type=float, default=4.0, help="seconds idle before reading")
    args = parser.parse_args()
    print_machine("grpcio")
    for label, trim_s in (("trim off (baseline)", "0"), ("trim every 1 s", "1")):
        runs = [run(trim_s, args.idle) for _ in range(args.runs)]
        before, after, idle = (statistics.median(r[i] for r in runs) for i in range(3))
        print(f"{label:22} RSS before {before:6.0f} MB, after the burst {after:6.0f} MB, "
              f"after {args.idle:g} s idle {idle:6.0f} MB ({idle / before:.2f}x before; "
              f"medians of {args.runs})")


if __name__ == "__main__":
    main()
