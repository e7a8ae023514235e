"""Table jobs end to end: a real server subprocess, the fake OpenAI server in its own process
(fast path, canned answers, ``--latency`` per call).

A table of ``--rows`` rows (default 20,000) gets an LLM column; a backfill job
(CreateTableJob, RUN_SELECTED, only_missing) fills it with ``--concurrency`` calls in flight
(the server's ``batch_workers``, default 64). Printed:

* wall time from CreateTableJob to the job's end, against the ideal
  ``rows / concurrency * latency``, and the server's CPU seconds per row;
* interactive latency: p50/p95 of a one-row StreamAddRows (one LLM cell, same model) on the
  same server while idle and while the job runs (same run), ``--probes`` calls each.

Run: ``.venv/bin/python bench/bench_table_jobs.py [--rows 20000] [--latency 0.1]
[--concurrency 64] [--probes 30]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _machine import print_machine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc
from google.protobuf import struct_pb2

from rowforge.v1 import batch_job_service_pb2 as bpb
from rowforge.v1 import batch_job_service_pb2_grpc, common_pb2, table_service_pb2_grpc
from rowforge.v1 import table_service_pb2 as pb
from tests.support.server import ServerProcess

KEY_ENV = "ROWFORGE_BENCH_FAKE_KEY"
MD = (("x-project-id", "bench"),)
ACTION = common_pb2.TABLE_TYPE_ACTION
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def row(i: int) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update({"q": f"item {i} of the catalogue"})
    return s


def llm(name: str) -> pb.Column:
    return pb.Column(id=name, dtype="str", gen_config=pb.GenConfig(llm=pb.LLMGenConfig(
        model="fake/gpt", prompt="One sentence about ${q}.", max_tokens=50)))


async def probe(stub: table_service_pb2_grpc.TableServiceStub, n: int) -> list[float]:
    """Latencies of ``n`` one-row StreamAddRows calls (one LLM cell), one after another."""
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        async for _ in stub.StreamAddRows(pb.StreamAddRowsRequest(
                table_type=ACTION, table_id="probe", data=[row(i)]), metadata=MD):
            pass
        out.append(time.perf_counter() - t0)
    return out


def pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


async def run(address: str, args: argparse.Namespace, pid: int) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        t = table_service_pb2_grpc.TableServiceStub(channel)
        b = batch_job_service_pb2_grpc.BatchJobServiceStub(channel)
        await t.CreateTable(pb.CreateTableRequest(table_type=ACTION, table_id="big", cols=[
            pb.Column(id="q", dtype="str")]), metadata=MD)
        await t.CreateTable(pb.CreateTableRequest(table_type=ACTION, table_id="probe", cols=[
            pb.Column(id="q", dtype="str"), llm("a")]), metadata=MD)
        t0 = time.perf_counter()
        for start in range(0, args.rows, 100):
            await t.AddRows(pb.AddRowsRequest(table_type=ACTION, table_id="big", data=[
                row(i) for i in range(start, min(args.rows, start + 100))]), metadata=MD)
        print(f"  {args.rows} rows added in {time.perf_counter() - t0:.1f} s")
        await t.AddColumns(pb.AddColumnsRequest(table_type=ACTION, table_id="big",
                                                cols=[llm("a")]), metadata=MD)
        idle = await probe(t, args.probes)
        cpu0 = cpu_s(pid)
        t0 = time.perf_counter()
        job = (await t.CreateTableJob(pb.CreateTableJobRequest(
            table_type=ACTION, table_id="big", all_rows=True,
            regen_strategy=pb.REGEN_STRATEGY_RUN_SELECTED, output_column_id="a",
            only_missing=True), metadata=MD)).job
        created = time.perf_counter() - t0
        await asyncio.sleep(min(2.0, args.rows / args.concurrency * args.latency / 4))
        busy = await probe(t, args.probes)
        async for _ in b.WatchJob(bpb.WatchJobRequest(job_id=job.job_id), metadata=MD):
            pass
        wall = time.perf_counter() - t0
        cpu = cpu_s(pid) - cpu0
        final = (await b.GetJob(bpb.GetJobRequest(job_id=job.job_id), metadata=MD)).job
    ideal = args.rows / args.concurrency * args.latency
    m = final.metrics
    print(f"  job {bpb.JobState.Name(final.state)}: {m.successful_requests} rows ok, "
          f"{m.failed_requests} failed, {m.provider_calls} provider calls")
    print(f"  backfill wall {wall:.1f} s (CreateTableJob {created:.1f} s of it), ideal "
          f"{ideal:.1f} s: {wall / ideal:.2f}x ideal; {m.successful_requests / wall:.0f} rows/s; "
          f"server CPU {cpu / max(1, args.rows) * 1000:.2f} ms/row")
    print(f"  interactive one-row StreamAddRows: idle p50 {statistics.median(idle) * 1000:.0f} ms"
          f" p95 {pct(idle, 0.95) * 1000:.0f} ms; during the job p50 "
          f"{statistics.median(busy) * 1000:.0f} ms p95 {pct(busy, 0.95) * 1000:.0f} ms "
          f"({statistics.median(busy) / statistics.median(idle):.2f}x idle p50)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--probes", type=int, default=30)
    args = parser.parse_args()
    print_machine()
    from tests.fakes.openai_server import spawn

    fake, base_url = spawn(latency=args.latency)
    try:
        models = [{"id": "fake/gpt", "route": "openai/fake-gpt", "api_base": base_url,
                   "api_key_env": KEY_ENV, "capabilities": ["chat"], "transport": "openai"}]
        env = {"ROWFORGE_MODELS": json.dumps(models), KEY_ENV: "sk-bench",
               "ROWFORGE_BATCH_WORKERS": str(args.concurrency),
               "ROWFORGE_LOG_LEVEL": "WARNING"}
        with tempfile.TemporaryDirectory() as work:
            proc = ServerProcess(Path(work), env=env).start()
            try:
                assert proc.process is not None
                print(f"table job backfill: {args.rows} rows, latency {args.latency * 1000:.0f}"
                      f" ms, concurrency {args.concurrency}")
                asyncio.run(run(proc.address, args, proc.process.pid))
            finally:
                proc.terminate()
    finally:
        fake.terminate()
        fake.wait(10)


if __name__ == "__main__":
    main()
