"""What observability costs: StreamAddRows throughput and HybridSearch latency with metrics and
tracing off, and with both on (spans made but not exported: ``OTEL_TRACES_EXPORTER=none``, no
collector here), on the same machine in the same run (rounds alternate the order; medians).

Modes: ``off``, ``metrics``, ``metrics+tracing`` (every trace kept), ``+tracing 10%`` (metrics
and tracing with OTEL_TRACES_SAMPLER=parentbased_traceidratio at 0.1). Each round starts a fresh server subprocess
per mode (SQLite, built-in models): 10,000 rows
through StreamAddRows (100 per call, 2 calls in flight, ``coalesce_events`` as our clients ask:
the cheapest rows, so observability weighs the most) into a table with one LLM column, then
300 sequential HybridSearch calls over a 300-chunk knowledge table.

Defaults: 5 rounds of 10,000 rows (at 3,000 rows a mode ran ~1 s and two runs of the same code
gave 0.81x and 1.02x for tracing: the noise was larger than the effect).

Run: ``.venv/bin/python bench/bench_metrics.py [--rounds 5] [--rows 10000]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _machine import cpu_seconds, print_machine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc
from google.protobuf import struct_pb2

from rowforge.v1 import (
    common_pb2,
    knowledge_service_pb2,
    knowledge_service_pb2_grpc,
    table_service_pb2_grpc,
)
from rowforge.v1 import table_service_pb2 as pb
from tests.support.server import ServerProcess

MD = (("x-project-id", "bench"),)
WORDS = ["gRPC", "streams", "rows", "through", "tables", "whose", "columns", "fill",
         "themselves", "with", "models", "knowledge", "holds", "chunks", "searched", "by",
         "vectors", "and", "BM25", "fusion"]


def _row(i: int) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update({"q": f"question {i}: " + " ".join(WORDS[(i + k) % len(WORDS)] for k in range(8))})
    return out


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _measure(address: str, pid: int, rows: int) -> tuple[float, float, float, float]:
    """StreamAddRows rows/s, HybridSearch p50 (ms), and the server's CPU per row and per
    search (µs; every thread, from /proc: steadier than wall time on a loaded machine)."""
    async with grpc.aio.insecure_channel(address) as channel:
        tables = table_service_pb2_grpc.TableServiceStub(channel)
        cols = [pb.Column(id="q", dtype="str"), pb.Column(id="a", dtype="str", gen_config=
                pb.GenConfig(llm=pb.LLMGenConfig(prompt="Answer ${q}")))]
        for name in ("t", "warm"):
            await tables.CreateTable(pb.CreateTableRequest(
                table_type=common_pb2.TABLE_TYPE_ACTION, table_id=name, cols=cols), metadata=MD)
        batches = [[_row(i) for i in range(s, min(s + 100, rows))] for s in range(0, rows, 100)]

        async def stream(table: str, batch: list[struct_pb2.Struct]) -> None:
            async for _ in tables.StreamAddRows(pb.StreamAddRowsRequest(
                    table_type=common_pb2.TABLE_TYPE_ACTION, table_id=table, data=batch,
                    coalesce_events=True), metadata=MD):
                pass

        for batch in batches[:3]:
            await stream("warm", batch)
        queue = list(batches)

        async def worker() -> None:
            while queue:
                await stream("t", queue.pop())

        start, cpu = time.perf_counter(), cpu_seconds(pid)
        await asyncio.gather(worker(), worker())
        rows_s = rows / (time.perf_counter() - start)
        cpu_row = (cpu_seconds(pid) - cpu) / rows * 1e6

        await tables.CreateTable(pb.CreateTableRequest(
            table_type=common_pb2.TABLE_TYPE_KNOWLEDGE, table_id="kb"), metadata=MD)
        for s in range(0, 300, 100):
            data = []
            for i in range(s, s + 100):
                chunk = struct_pb2.Struct()
                chunk.update({"Title": f"doc {i}", "Text": " ".join(
                    WORDS[(i * 7 + k) % len(WORDS)] for k in range(30))})
                data.append(chunk)
            await tables.AddRows(pb.AddRowsRequest(
                table_type=common_pb2.TABLE_TYPE_KNOWLEDGE, table_id="kb", data=data),
                metadata=MD)
        search = knowledge_service_pb2_grpc.KnowledgeServiceStub(channel)
        times = []
        cpu = 0.0
        for i in range(330):
            if i == 30:
                cpu = cpu_seconds(pid)
            started = time.perf_counter()
            await search.HybridSearch(knowledge_service_pb2.HybridSearchRequest(
                table_id="kb", query=" ".join(WORDS[i % len(WORDS):][:4]), k=10), metadata=MD)
            if i >= 30:  # the first calls open the index
                times.append(time.perf_counter() - started)
        cpu_search = (cpu_seconds(pid) - cpu) / len(times) * 1e6
        return rows_s, statistics.median(times) * 1000, cpu_row, cpu_search


TRACED = {"ROWFORGE_METRICS": "true", "ROWFORGE_TRACING": "true", "OTEL_TRACES_EXPORTER": "none"}
MODES = {"off": {}, "metrics": {"ROWFORGE_METRICS": "true"},
         "metrics+tracing": TRACED,
         # What production tracing usually runs with: 10% of traces kept (a caller's sampled
         # traceparent is always followed), set by the standard OTEL_TRACES_SAMPLER variables.
         "+tracing 10%": {**TRACED, "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                          "OTEL_TRACES_SAMPLER_ARG": "0.1"}}


def run_mode(mode: str, rows: int) -> tuple[float, float, float, float]:
    env = {"ROWFORGE_METRICS_PORT": str(_free_port()), **MODES[mode]}
    server = ServerProcess(Path(tempfile.mkdtemp(prefix="bench-metrics-")), env=env)
    with server.start():
        assert server.process is not None
        return asyncio.run(_measure(server.address, server.process.pid, rows))


def instrumentation_cost(n: int = 20_000) -> tuple[float, float]:
    """What metrics + tracing (every trace kept) add per row and per search, timed directly in
    this process (µs; steady where the end-to-end rounds are not): per row, one model call's
    leaf span and metrics and a cell count; per search, the RPC span with its metrics, the
    search span, the query embedding's leaf span and metrics, and the search histogram."""
    from rowforge.server import tracing
    from rowforge.server.metrics import Metrics

    metrics = Metrics(True)
    tracing.configure(True)  # OTEL_TRACES_EXPORTER=none (set in main): spans made, not sent
    method = "/rowforge.v1.KnowledgeService/HybridSearch"
    try:
        with tracing.rpc_span("/rowforge.v1.TableService/StreamAddRows", {}):
            start = time.perf_counter()
            for _ in range(n):
                with tracing.leaf("provider.chat", model="rowforge/chat"):
                    pass
                metrics.provider_call("rowforge/chat", "chat", "ok", 0.001, prompt_tokens=20,
                                      completion_tokens=30)
                metrics.cell("llm", "done")
            per_row = (time.perf_counter() - start) / n * 1e6
        start = time.perf_counter()
        for _ in range(n):
            started = metrics.rpc_started(method, False, False)
            with tracing.rpc_span(method, {}) as span:
                with tracing.span("knowledge.search", k=10, filtered=False):
                    with tracing.leaf("provider.embed", model="rowforge/embed"):
                        pass
                    metrics.provider_call("rowforge/embed", "embed", "ok", 0.0001,
                                          prompt_tokens=5)
                metrics.search(0.002)
                tracing.rpc_done(span, "OK")
            metrics.rpc_handled(method, "OK", started)
        per_search = (time.perf_counter() - start) / n * 1e6
    finally:
        tracing.configure(False)
    return per_row, per_search


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rows", type=int, default=10000)
    args = parser.parse_args()
    print_machine("grpcio", "prometheus-client", "opentelemetry-sdk")
    results: dict[str, list[tuple[float, float, float, float]]] = {mode: [] for mode in MODES}
    for r in range(args.rounds):
        order = list(MODES) if r % 2 == 0 else list(reversed(MODES))
        for mode in order:
            results[mode].append(run_mode(mode, args.rows))
            rows_s, p50, cpu_row, cpu_search = results[mode][-1]
            print(f"round {r + 1} {mode:16}: {rows_s:6.0f} rows/s StreamAddRows "
                  f"({cpu_row:.0f} us CPU/row), HybridSearch p50 {p50:.2f} ms "
                  f"({cpu_search:.0f} us CPU/search), load {os.getloadavg()[0]:.1f}", flush=True)
    os.environ["OTEL_TRACES_EXPORTER"] = "none"
    per_row, per_search = instrumentation_cost()
    base_cpu_row = statistics.median(x[2] for x in results["off"])
    base_cpu_search = statistics.median(x[3] for x in results["off"])
    print(f"\nmetrics + tracing timed directly: {per_row:.1f} us per row = "
          f"{100 * per_row / base_cpu_row:.1f}% of a row's server CPU with both off "
          f"({base_cpu_row:.0f} us), {per_search:.1f} us per search = "
          f"{100 * per_search / base_cpu_search:.1f}% of a search's ({base_cpu_search:.0f} us)")
    base_rows = statistics.median(x[0] for x in results["off"])
    base_p50 = statistics.median(x[1] for x in results["off"])
    print(f"\nmedians of {args.rounds} rounds; ratios to off: of the medians, and the median "
          "of each round's own ratio (steadier on a noisy machine):")
    for mode in MODES:
        rows_s = statistics.median(x[0] for x in results[mode])
        p50 = statistics.median(x[1] for x in results[mode])
        paired_rows = statistics.median(m[0] / o[0] for m, o in zip(
            results[mode], results["off"], strict=True))
        paired_p50 = statistics.median(m[1] / o[1] for m, o in zip(
            results[mode], results["off"], strict=True))
        cpu = [statistics.median(x[i] for x in results[mode]) for i in (2, 3)]
        base_cpu = [statistics.median(x[i] for x in results["off"]) for i in (2, 3)]
        print(f"  {mode:16} StreamAddRows {rows_s:6.0f} rows/s ({rows_s / base_rows:.3f}x, "
              f"paired {paired_rows:.3f}x), CPU/row {cpu[0]:.0f} us "
              f"({cpu[0] / base_cpu[0]:.3f}x)  HybridSearch p50 {p50:.2f} ms "
              f"({p50 / base_p50:.3f}x, paired {paired_p50:.3f}x), CPU/search {cpu[1]:.0f} us "
              f"({cpu[1] / base_cpu[1]:.3f}x)")


if __name__ == "__main__":
    main()
