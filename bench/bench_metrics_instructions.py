"""What metrics and tracing cost per StreamAddRows row in instructions, counted by valgrind's
callgrind in the served process: unlike CPU time, the count does not move with the machine's
load (two runs of the same mode differ by ~0.5%), so a few per cent can be resolved on a
shared machine where bench_metrics.py's rounds cannot.

Each mode starts a server under ``valgrind --tool=callgrind --instr-atstart=no``, warms it
with 1,000 rows, counts instructions only while ``--rows`` rows go through StreamAddRows
(as in bench_metrics.py: 100 per call, 2 calls in flight, ``coalesce_events``, one LLM
column on the built-in model), and reports instructions per row and the ratio to ``off``.
HybridSearch cannot be counted: valgrind does not decode hnswlib's AVX-512 instructions.

Run: ``.venv/bin/python bench/bench_metrics_instructions.py [--rows 2000]`` (needs valgrind;
~1 minute per mode).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _machine import print_machine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc
from bench_metrics import MD, MODES, _free_port, _row

from rowforge.v1 import common_pb2, table_service_pb2_grpc
from rowforge.v1 import table_service_pb2 as pb
from tests.support.server import ServerProcess


async def _stream_rows(stub: table_service_pb2_grpc.TableServiceStub, start: int,
                       rows: int) -> None:
    queue = [[_row(i) for i in range(s, s + 100)] for s in range(start, start + rows, 100)]

    async def worker() -> None:
        while queue:
            async for _ in stub.StreamAddRows(pb.StreamAddRowsRequest(
                    table_type=common_pb2.TABLE_TYPE_ACTION, table_id="t", data=queue.pop(),
                    coalesce_events=True), metadata=MD):
                pass

    await asyncio.gather(worker(), worker())


def _callgrind(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], check=True, capture_output=True)


async def _count(server: ServerProcess, rows: int) -> None:
    """Warm up, then count instructions while ``rows`` rows are added; dump the counts."""
    assert server.process is not None
    pid = server.process.pid
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = table_service_pb2_grpc.TableServiceStub(channel)
        await stub.CreateTable(pb.CreateTableRequest(
            table_type=common_pb2.TABLE_TYPE_ACTION, table_id="t", cols=[
                pb.Column(id="q", dtype="str"),
                pb.Column(id="a", dtype="str", gen_config=pb.GenConfig(
                    llm=pb.LLMGenConfig(prompt="Answer ${q}")))]), metadata=MD)
        await _stream_rows(stub, 0, 1000)
        _callgrind(pid, "-i", "on")
        await _stream_rows(stub, 1000, rows)
        _callgrind(pid, "-i", "off")
        _callgrind(pid, "-d")


def _totals(out: Path) -> int:
    """The instruction total of callgrind's dump of ``out``."""
    dumps: list[Path] = []
    for _ in range(100):  # the dump is written asynchronously
        dumps = sorted(out.parent.glob(out.name + ".*"))
        if dumps and "totals:" in dumps[-1].read_text():
            break
        time.sleep(0.1)
    for line in dumps[-1].read_text().splitlines():
        if line.startswith("totals:"):
            return int(line.split()[1])
    raise RuntimeError("no callgrind totals")


def run_mode(mode: str, rows: int, work: Path) -> float:
    """Instructions per row of the served process in ``mode`` (one of bench_metrics' modes)."""
    out = work / f"callgrind.{len(list(work.iterdir()))}"
    wrapper = work / "python.sh"
    wrapper.write_text("#!/bin/sh\nexec valgrind --tool=callgrind --instr-atstart=no "
                       f"--log-file={work}/valgrind.log --callgrind-out-file={out} "
                       f"{sys.executable} \"$@\"\n")
    wrapper.chmod(0o755)
    os.environ["ROWFORGE_TEST_SERVER_PYTHON"] = str(wrapper)
    env = {"ROWFORGE_METRICS_PORT": str(_free_port()), **MODES[mode]}
    server = ServerProcess(Path(tempfile.mkdtemp(prefix="bench-instr-")), env=env)
    with server.start(timeout=600):
        asyncio.run(_count(server, rows))
    return _totals(out) / rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=2000)
    args = parser.parse_args()
    print_machine("grpcio", "prometheus-client", "opentelemetry-sdk")
    work = Path(tempfile.mkdtemp(prefix="bench-callgrind-"))
    counts: dict[str, list[float]] = {}
    for mode in ["off", *(m for m in MODES if m != "off"), "off"]:  # off again: the noise
        per_row = run_mode(mode, args.rows, work)
        counts.setdefault(mode, []).append(per_row)
        base = counts["off"][0]
        print(f"{mode:16}: {per_row / 1000:7.1f}k instructions per row "
              f"({per_row / base:.3f}x off)", flush=True)


if __name__ == "__main__":
    main()
