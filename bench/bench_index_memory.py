"""A replica's memory with many knowledge tables under ``knowledge_index_memory_mb``: RSS
while every table is searched in turn, against the budget + 300 MB the issue allows.

One server (SQLite), ``--tables`` knowledge tables of ``--rows`` rows each embedded by the
fake provider's ``--dim``-d embedding model (over HTTP), budget ``--budget-mb``. Then
``--passes`` (3) passes search every table in turn (the first opens each index from the
database, later ones load evicted indexes from the files saved at eviction), each search checked (the row whose text was asked for
is among the top 10); the server's RSS is sampled every 20 ms during the searches.

Run::

    .venv/bin/python bench/bench_index_memory.py [--tables 20] [--rows 20000] [--budget-mb 200]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from _machine import print_machine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import grpc

from rowforge.v1 import table_service_pb2 as tpb
from tests.conftest import server_env
from tests.integration.test_knowledge_service import KNOWLEDGE, Client
from tests.support.server import ServerProcess

MD = (("x-project-id", "memory"),)
MiB = 1024 * 1024


def rss(pid: int, field: str = "VmRSS") -> int:
    """Resident bytes: ``VmRSS`` (all), ``RssAnon`` (heap: graphs, objects) or ``RssFile``
    (mapped files: the SQLite database and BM25 segments, clean pages the kernel may drop)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    return 0


def text(t: int, i: int) -> str:
    return f"Table {t} record {i}: gauge g{i * 31 % 997} at {i * 7} kPa, site s{t}x{i}."


async def ingest(client: Client, t: int, rows: int) -> None:
    await client.tables.CreateTable(tpb.CreateTableRequest(
        table_type=KNOWLEDGE, table_id=f"kb{t}", embedding_model="fake/embed"),
        metadata=client.md)
    sem = asyncio.Semaphore(4)

    async def batch(start: int) -> None:
        async with sem:
            await client.add([{"Title": f"r{i}", "Text": text(t, i)}
                              for i in range(start, min(rows, start + 100))], table_id=f"kb{t}")

    await asyncio.gather(*(batch(s) for s in range(0, rows, 100)))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tables", type=int, default=20)
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--budget-mb", type=int, default=200)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="keep the server's data here; when it already holds the tables, "
                             "skip the ingest (their index files are removed first, so the "
                             "first pass still opens every index from the database)")
    args = parser.parse_args()
    print_machine("grpcio", "hnswlib", "tantivy")
    from tests.fakes.openai_server import spawn

    fake_process, base_url = spawn(embedding_size=args.dim)
    work = args.data_dir or Path(tempfile.mkdtemp(prefix="rowforge-bench-memory-"))
    ingested = (work / "ingested").exists()
    if ingested:
        shutil.rmtree(work / "server" / "indexes", ignore_errors=True)
    from types import SimpleNamespace

    env = {**server_env(SimpleNamespace(base_url=base_url)),
           "ROWFORGE_KNOWLEDGE_INDEX_MEMORY_MB": str(args.budget_mb),
           "ROWFORGE_LOG_LEVEL": "INFO"}
    try:
        with ServerProcess(work / "server", env=env).start() as proc:
            assert proc.process is not None
            pid = proc.process.pid
            async with grpc.aio.insecure_channel(proc.address) as channel:
                client = Client(channel, MD)
                started = time.perf_counter()
                if not ingested:
                    for t in range(args.tables):
                        await ingest(client, t, args.rows)
                    (work / "ingested").write_text(f"{args.tables} {args.rows}\n")
                    print(f"ingested {args.tables} x {args.rows} rows in "
                          f"{time.perf_counter() - started:.0f} s; RSS {rss(pid) / MiB:.0f} MiB",
                          flush=True)
                else:
                    print(f"reused {work}; RSS {rss(pid) / MiB:.0f} MiB", flush=True)
                samples: list[int] = []
                anon: list[int] = []
                stop = threading.Event()

                def sample() -> None:
                    while not stop.is_set():
                        samples.append(rss(pid))
                        anon.append(rss(pid, "RssAnon"))
                        time.sleep(0.02)

                sampler = threading.Thread(target=sample, daemon=True)
                sampler.start()
                latencies: dict[int, list[float]] = {p: [] for p in range(args.passes)}
                for pass_ in range(args.passes):
                    if pass_:
                        await asyncio.sleep(2)  # graphs opened by the last pass finish building
                    for t in range(args.tables):
                        i = (t * 7919 + pass_ * 104729) % args.rows
                        begin = time.perf_counter()
                        reply = await client.search(text(t, i), table_id=f"kb{t}", k=10)
                        latencies[pass_].append(time.perf_counter() - begin)
                        # The fake's 64-d bag-of-words vectors are coarse: the check is that
                        # hybrid search finds the row among its top 10.
                        found = [x.row.cells["Text"].value.string_value for x in reply.items]
                        assert text(t, i) in found, (t, i, found)
                stop.set()
                sampler.join()
                # The server's memory trimmer (every memory_trim_s, 10 s: gc + malloc_trim)
                # tells live memory from freed memory the allocator still holds.
                await asyncio.sleep(12)
                settled = rss(pid, "RssAnon")
            logs = proc.logs()
        evictions = sum(e.get("msg") == "evicted a knowledge index under the memory budget"
                        for e in logs)
        peak = max(samples)
        limit = args.budget_mb * MiB + 300 * MiB
        print("searches: " + "; ".join(
            f"pass {p + 1} p50 {statistics.median(v) * 1000:.0f} ms"
            for p, v in latencies.items()) + " (pass 1 opens every index from the database; "
            "evicted ones load from their saved files after); every answer right")
        print(f"evictions: {evictions}; RSS while searching: median "
              f"{statistics.median(samples) / MiB:.0f} MiB, peak {peak / MiB:.0f} MiB; budget "
              f"{args.budget_mb} MiB + 300 MiB = {limit / MiB:.0f} MiB: "
              f"{'within' if peak <= limit else 'OVER'}")
        print(f"of which anonymous (heap): median {statistics.median(anon) / MiB:.0f} MiB, peak "
              f"{max(anon) / MiB:.0f} MiB: "
              f"{'within' if max(anon) <= limit else 'OVER'} budget + 300 MiB")
        print(f"anonymous memory 12 s after the last search (after a trim): "
              f"{settled / MiB:.0f} MiB")
        print(f"load average after: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        fake_process.kill()
        fake_process.wait(10)
        if args.data_dir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
