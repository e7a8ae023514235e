"""Replicas as one service: the mixed workload's throughput with 1, 2 and 3 replicas behind
nginx (ratios in one run), the replicas' CPU per request, and knowledge search p50 with the
table's index evicted vs resident.

Setup per replica count: fresh PostgreSQL database (127.0.0.1:5432 or
``ROWFORGE_TEST_POSTGRES_URL``), moto's S3 server on loopback, the fake OpenAI provider in a
process of its own (``--latency`` per call), nginx from deploy/cluster.py in front (client-side
``round_robin`` over the replicas when nginx is not installed). The mixed workload, all at once
through the load balancer:

* a batch job of ``--requests`` chat requests (submitted, then followed to the end);
* ``--streams`` StreamAddRows calls of 50 rows each, with one LLM column;
* ``--uploads`` uploads of 256 KiB (S3);
* ``--searches`` HybridSearch calls on a 500-row knowledge table.

"Requests" below counts every model call and RPC of the workload (batch requests + generated
cells + uploads + searches); CPU per request is the replicas' user+system CPU time (from
/proc) during the timed part over that count: replicas that add no per-request cost keep it
flat as they are added. The setup (tables, the job's requests, a first search on every replica,
which builds its own copy of the knowledge index, and six uploads to every replica: its
first S3 requests cost more, printed) is not timed. Before the timed part the idle
replicas' CPU is measured for ``--idle`` seconds (background loops: heartbeats, lease
renewal, batch and index polls); "net" CPU per request subtracts that rate over the timed
part's duration. The replicas' involuntary context switches per request are printed too (a
replica preempted for another process: more processes than cores). ``--parts`` also times
each part of the workload alone, to show which part's cost (if any) grows with replicas.
On a 2-core machine the throughput cannot scale past the cores (the fake, nginx, moto and the
client share them): the CPU per request is the figure that shows the replicas' own cost.

Eviction: one replica with ``knowledge_index_memory_mb`` (64) fitting one of two 5,000-row tables
(~52 MB of graph each); after both indexes are built and saved (searches are timed only once
they are fast: a search during the graph build is far slower, see ``settled``),
p50 of searching table A repeatedly (resident) vs alternating A and B (each search loads the
evicted index from its saved files and catches up from the change feed).

Run::

    .venv/bin/python bench/bench_cluster.py [--requests 1000] [--replicas 1,2,3] [--parts]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _machine import print_machine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import grpc

from deploy.cluster import nginx
from rowforge.v1 import batch_job_service_pb2 as bpb
from rowforge.v1 import batch_job_service_pb2_grpc, file_service_pb2_grpc, table_service_pb2_grpc
from rowforge.v1 import file_service_pb2 as fpb
from rowforge.v1 import table_service_pb2 as tpb
from tests.conftest import server_env
from tests.integration.generation_support import ACTION, create_table, input_col, llm_col, struct
from tests.integration.test_batch_support import add_all, results, text_request
from tests.integration.test_knowledge_service import Client
from tests.support import postgres
from tests.support.s3 import moto_server
from tests.support.server import ServerProcess

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
MD = (("x-project-id", "bench"),)


def cpu_seconds(proc: ServerProcess) -> float:
    assert proc.process is not None
    with open(f"/proc/{proc.process.pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


@contextlib.contextmanager
def fake_provider(latency: float) -> Iterator[object]:
    from types import SimpleNamespace

    from tests.fakes.openai_server import spawn

    process, base_url = spawn(latency=latency, canned_tokens=20)
    try:
        yield SimpleNamespace(base_url=base_url)
    finally:
        process.kill()
        process.wait(10)


def have_nginx() -> bool:
    return bool(shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin"))


@contextlib.contextmanager
def balancer(replicas: list[ServerProcess], work: Path) -> Iterator[tuple[str, list[tuple[str, str]]]]:
    """(target, channel options): nginx when installed, else client-side round_robin."""
    if have_nginx():
        from deploy.cluster import free_port

        port = free_port()
        with nginx(port, [r.address for r in replicas], work / "nginx"):
            yield f"127.0.0.1:{port}", []
        return
    import json

    config = {"loadBalancingConfig": [{"round_robin": {}}]}
    yield ("ipv4:" + ",".join(r.address for r in replicas),
           [("grpc.service_config", json.dumps(config))])


async def knowledge_table(client: Client, table_id: str, rows: int) -> None:
    await client.create(table_id)
    for start in range(0, rows, 100):
        await client.add([{"Title": f"{table_id} {i}", "Text": f"Entry {i} of {table_id}: "
                           f"valve v{i % 37} pressure {i * 3} line l{i}"}
                          for i in range(start, min(rows, start + 100))], table_id=table_id)


def sample(replicas: list[ServerProcess]) -> tuple[float, int]:
    """(user+system CPU seconds, involuntary context switches), summed over the replicas."""
    cpu = switches = 0
    for proc in replicas:
        cpu += cpu_seconds(proc)
        assert proc.process is not None
        with open(f"/proc/{proc.process.pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("nonvoluntary_ctxt_switches:"):
                    switches += int(line.split()[1])
    return cpu, switches


@dataclass
class Measure:
    """One timed part of the workload on one set of replicas."""

    seconds: float
    requests: int
    cpu: float  # the replicas' CPU seconds while it ran
    background: float  # what they use idle over as long (measured before, same replicas)
    switches: int  # involuntary context switches of the replicas

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    @property
    def cpu_ms(self) -> float:
        return self.cpu / self.requests * 1000

    @property
    def net_ms(self) -> float:
        return (self.cpu - self.background) / self.requests * 1000


PARTS = ("batch", "streams", "uploads", "searches")


async def workload(target: str, options: list[tuple[str, str]], args: argparse.Namespace,
                   replicas: list[ServerProcess]) -> dict[str, Measure]:
    """Set up, measure the idle replicas' background CPU, then time the mixed workload (all
    parts at once: ``"mixed"``) and, with ``--parts``, each part alone."""
    async with grpc.aio.insecure_channel(target, options=options) as channel:
        jobs = batch_job_service_pb2_grpc.BatchJobServiceStub(channel)
        tables = table_service_pb2_grpc.TableServiceStub(channel)
        files = file_service_pb2_grpc.FileServiceStub(channel)
        kb = Client(channel, MD)
        await knowledge_table(kb, "kb", 500)
        await create_table(tables, MD, "t", [input_col("q"),
                                             llm_col("a", "Answer ${q}", model="fake/gpt")])
        job_ids = []
        for _ in range(2 if args.parts else 1):
            job = (await jobs.CreateJob(bpb.CreateJobRequest(model="fake/gpt"), metadata=MD)).job
            await add_all(jobs, MD, job.job_id,
                          [text_request(f"r{i}") for i in range(args.requests)])
            job_ids.append(job.job_id)
        payload = os.urandom(128 * 1024).hex().encode()

        async def stream(s: int) -> None:
            async for _message in tables.StreamAddRows(tpb.StreamAddRowsRequest(
                    table_type=ACTION, table_id="t",
                    data=[struct({"q": f"q{s}-{i}"}) for i in range(50)]), metadata=MD):
                pass

        async def upload(name: str, stub: file_service_pb2_grpc.FileServiceStub = files
                         ) -> None:
            def parts() -> Iterator[fpb.UploadFileRequest]:
                yield fpb.UploadFileRequest(metadata=fpb.FileMetadata(name=name))
                yield fpb.UploadFileRequest(chunk=payload + str(uuid.uuid4()).encode())

            await stub.UploadFile(parts(), metadata=MD, timeout=60)

        async def search(i: int) -> None:
            await kb.search(f"valve v{i % 37} pressure", table_id="kb", k=5)

        async def batch(job_id: str) -> None:
            await jobs.SubmitJob(bpb.SubmitJobRequest(job_id=job_id), metadata=MD)
            found, _final = await results(jobs, MD, job_id, timeout=600)
            assert len(found) == args.requests

        sem = asyncio.Semaphore(args.concurrency)

        async def limited(coro):  # type: ignore[no-untyped-def]
            async with sem:
                await coro

        def calls(part: str, job_id: str) -> tuple[list[Any], int]:
            if part == "batch":
                return [batch(job_id)], args.requests
            if part == "streams":
                return [stream(s) for s in range(args.streams)], 50 * args.streams
            if part == "uploads":
                return [limited(upload(f"u{i}.txt")) for i in range(args.uploads)], args.uploads
            return [limited(search(i)) for i in range(args.searches)], args.searches

        # Warm-up, on each replica directly: a search builds its own copy of the index;
        # uploads make its first S3 requests (botocore builds each operation's model, signer
        # and connections on first use: a cost per replica, not per request).
        warm: list[tuple[float, float]] = []  # per replica: (1st upload, each of the next 5)
        for n, replica in enumerate(replicas):
            async with grpc.aio.insecure_channel(replica.address) as direct:
                await Client(direct, MD).search("valve", table_id="kb", k=5)
                direct_files = file_service_pb2_grpc.FileServiceStub(direct)
                spent = []
                for count in (1, 5):
                    cpu_before = cpu_seconds(replica)
                    for i in range(count):
                        await upload(f"w{n}-{count}-{i}.txt", direct_files)
                    spent.append((cpu_seconds(replica) - cpu_before) / count)
                warm.append((spent[0], spent[1]))
        print("  warm-up uploads, each replica's CPU for its 1st upload / each of the next 5: "
              + "; ".join(f"{a * 1000:.0f} / {b * 1000:.0f} ms" for a, b in warm), flush=True)
        before = sample(replicas)
        await asyncio.sleep(args.idle)
        background_per_s = (sample(replicas)[0] - before[0]) / args.idle

        async def timed(parts: tuple[str, ...], job_id: str) -> Measure:
            coros, requests = [], 0
            for part in parts:
                more, count = calls(part, job_id)
                coros += more
                requests += count
            cpu_before, switches_before = sample(replicas)
            started = time.perf_counter()
            await asyncio.gather(*coros)
            seconds = time.perf_counter() - started
            cpu, switches = sample(replicas)
            return Measure(seconds, requests, cpu - cpu_before, background_per_s * seconds,
                           switches - switches_before)

        measured = {"mixed": await timed(PARTS, job_ids[0])}
        if args.parts:
            for part in PARTS:
                await asyncio.sleep(1.0)  # let the previous part's background work settle
                measured[part] = await timed((part,), job_ids[1])
    return measured


async def run_replicas(count: int, args: argparse.Namespace, fake: object, s3_env: dict[str, str],
                       work: Path) -> dict[str, Measure]:
    url = await asyncio.to_thread(postgres.create_database)
    replicas = []
    try:
        env = {**server_env(fake), **s3_env, "ROWFORGE_DATABASE_URL": url,
               "ROWFORGE_LOG_LEVEL": "WARNING"}
        replicas = [ServerProcess(work / f"r{count}-{i}", env={
            **env, "ROWFORGE_WORKER_ID": f"bench-{count}-{i}"}).start() for i in range(count)]
        if args.only_first:  # the others run idle: their presence alone, measured
            return await workload(replicas[0].address, [], args, replicas)
        with balancer(replicas, work / f"lb{count}") as (target, options):
            return await workload(target, options, args, replicas)
    finally:
        for r in replicas:
            r.terminate()
        await asyncio.to_thread(postgres.drop_database, url)


async def eviction(args: argparse.Namespace, fake: object, work: Path) -> tuple[float, float]:
    env = {**server_env(fake), "ROWFORGE_KNOWLEDGE_INDEX_MEMORY_MB": str(args.evict_budget_mb),
           "ROWFORGE_LOG_LEVEL": "WARNING"}
    with ServerProcess(work / "evict", env=env).start() as proc:
        async with grpc.aio.insecure_channel(proc.address) as channel:
            kb = Client(channel, MD)

            async def settled(table: str) -> float:
                """Search ``table`` in rounds until its graphs are built (a search while the
                graph is built scans the not-yet-indexed rows and shares the CPU with the
                builder: ~50x slower at 5,000 rows): two rounds in a row with a median under
                ``--settled-ms``; returns the seconds it took."""
                began, fast = time.perf_counter(), 0
                while fast < 2 and time.perf_counter() - began < 120:
                    times = []
                    for i in range(5):
                        start = time.perf_counter()
                        await kb.search(f"valve v{i} pressure", table_id=table, k=5)
                        times.append(time.perf_counter() - start)
                    fast = fast + 1 if statistics.median(times) * 1000 < args.settled_ms else 0
                    await asyncio.sleep(0.5)
                return time.perf_counter() - began

            # A built (resident), then B (A evicted once complete: saved), then A again (loaded
            # from its files, B saved): both indexes exist on disk before anything is timed.
            await knowledge_table(kb, "a", args.evict_rows)
            waits = [await settled("a")]
            await knowledge_table(kb, "b", args.evict_rows)
            waits += [await settled("b"), await settled("a")]
            print(f"  eviction set-up: indexes settled after {', '.join(f'{w:.1f}' for w in waits)}"
                  " s", flush=True)
            resident, evicted = [], []
            for i in range(args.evict_queries):
                start = time.perf_counter()
                await kb.search(f"valve v{i % 37} pressure", table_id="a", k=5)
                resident.append(time.perf_counter() - start)
            for i in range(args.evict_queries):
                start = time.perf_counter()
                await kb.search(f"valve v{i % 37} pressure", table_id="ab"[i % 2], k=5)
                evicted.append(time.perf_counter() - start)
    return statistics.median(resident), statistics.median(evicted)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicas", default="1,2,3")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--uploads", type=int, default=40)
    parser.add_argument("--searches", type=int, default=100)
    parser.add_argument("--latency", type=float, default=0.02)
    parser.add_argument("--evict-rows", type=int, default=5000)
    parser.add_argument("--evict-budget-mb", type=int, default=64)
    parser.add_argument("--evict-queries", type=int, default=30)
    parser.add_argument("--settled-ms", type=float, default=20.0,
                        help="eviction set-up: an index is built once searches take less")
    parser.add_argument("--idle", type=float, default=3.0,
                        help="seconds the idle replicas' background CPU is measured over")
    parser.add_argument("--parts", action="store_true",
                        help="also time each part of the workload alone (CPU per request)")
    parser.add_argument("--concurrency", type=int, default=16,
                        help="uploads and searches in flight at once (all replicas together)")
    parser.add_argument("--only-first", action="store_true",
                        help="send every call to the first replica, no load balancer (the "
                        "others idle: what their presence alone costs)")
    parser.add_argument("--no-eviction", action="store_true", help="skip the eviction figure")
    args = parser.parse_args()
    print_machine("grpcio", "sqlalchemy", "asyncpg", "aiobotocore", "moto")
    if await asyncio.to_thread(postgres.postgres_url) is None:
        print(postgres.SKIP_REASON)
        return
    print(f"load balancer: {'nginx' if have_nginx() else 'client-side round_robin'}")
    work = Path(tempfile.mkdtemp(prefix="rowforge-bench-cluster-"))
    try:
        with fake_provider(args.latency) as fake, moto_server() as s3:
            s3_env = s3.server_env(s3.bucket())
            rows: list[tuple[int, dict[str, Measure]]] = []
            for count in (int(c) for c in args.replicas.split(",")):
                measured = await run_replicas(count, args, fake, s3_env, work)
                rows.append((count, measured))
                for name, m in measured.items():
                    print(f"{count} replica(s), {name}: {m.requests} requests in "
                          f"{m.seconds:.2f} s = {m.rate:.0f}/s; replicas' CPU {m.cpu:.2f} s "
                          f"(idle over as long: {m.background:.2f} s) = {m.cpu_ms:.2f} ms per "
                          f"request, {m.net_ms:.2f} ms net of idle; "
                          f"{m.switches / m.requests:.1f} involuntary context switches per "
                          "request", flush=True)
            base = rows[0][1]["mixed"].rate
            print("\n| replicas | requests/s | vs 1 replica | replicas' CPU per request | "
                  "net of idle background | involuntary switches per request |")
            print("|---|---:|---:|---:|---:|---:|")
            for count, measured in rows:
                m = measured["mixed"]
                print(f"| {count} | {m.rate:.0f} | {m.rate / base:.2f}x | {m.cpu_ms:.2f} ms | "
                      f"{m.net_ms:.2f} ms | {m.switches / m.requests:.1f} |")
            if args.parts:
                print("\nEach part alone, replicas' CPU per request net of idle background "
                      "(ms):\n")
                print("| part | " + " | ".join(f"{count} replica(s)" for count, _ in rows) + " |")
                print("|---|" + "---:|" * len(rows))
                for part in PARTS:
                    print(f"| {part} | " + " | ".join(
                        f"{measured[part].net_ms:.2f}" for _, measured in rows) + " |")
            if not args.no_eviction:
                resident, evicted = await eviction(args, fake, work)
                print(f"\nknowledge search p50 ({args.evict_rows} rows): resident "
                      f"{resident * 1000:.1f} ms, evicted (loaded on demand) "
                      f"{evicted * 1000:.1f} ms = {evicted / resident:.1f}x")
        print(f"load average after: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
