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
which builds its own copy of the knowledge index) is not timed; the CPU idle replicas use over
as long is printed beside (background loops: lease renewal, batch and change-feed polls).
On a 2-core machine the throughput cannot scale past the cores (the fake, nginx, moto and the
client share them): the CPU per request is the figure that shows the replicas' own cost.

Eviction: one replica with ``knowledge_index_memory_mb`` (64) fitting one of two 5,000-row tables
(~52 MB of graph each);
p50 of searching table A repeatedly (resident) vs alternating A and B (each search loads the
evicted index from its saved files and catches up from the change feed).

Run::

    .venv/bin/python bench/bench_cluster.py [--requests 1000] [--replicas 1,2,3]
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
from pathlib import Path

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


async def mixed(target: str, options: list[tuple[str, str]], args: argparse.Namespace,
                replicas: list[ServerProcess]) -> tuple[float, int, float]:
    """Run the mixed workload; returns (seconds, requests, replicas' CPU seconds), timed
    after the setup (tables, the job's requests, every replica's knowledge index warm)."""
    async with grpc.aio.insecure_channel(target, options=options) as channel:
        jobs = batch_job_service_pb2_grpc.BatchJobServiceStub(channel)
        tables = table_service_pb2_grpc.TableServiceStub(channel)
        files = file_service_pb2_grpc.FileServiceStub(channel)
        kb = Client(channel, MD)
        await knowledge_table(kb, "kb", 500)
        await create_table(tables, MD, "t", [input_col("q"),
                                             llm_col("a", "Answer ${q}", model="fake/gpt")])
        job = (await jobs.CreateJob(bpb.CreateJobRequest(model="fake/gpt"), metadata=MD)).job
        await add_all(jobs, MD, job.job_id, [text_request(f"r{i}") for i in range(args.requests)])
        payload = os.urandom(128 * 1024).hex().encode()

        async def stream(s: int) -> None:
            async for _message in tables.StreamAddRows(tpb.StreamAddRowsRequest(
                    table_type=ACTION, table_id="t",
                    data=[struct({"q": f"q{s}-{i}"}) for i in range(50)]), metadata=MD):
                pass

        async def upload(i: int) -> None:
            def parts() -> Iterator[fpb.UploadFileRequest]:
                yield fpb.UploadFileRequest(metadata=fpb.FileMetadata(name=f"u{i}.txt"))
                yield fpb.UploadFileRequest(chunk=payload + str(uuid.uuid4()).encode())

            await files.UploadFile(parts(), metadata=MD, timeout=60)

        async def search(i: int) -> None:
            await kb.search(f"valve v{i % 37} pressure", table_id="kb", k=5)

        async def batch() -> None:
            await jobs.SubmitJob(bpb.SubmitJobRequest(job_id=job.job_id), metadata=MD)
            found, _final = await results(jobs, MD, job.job_id, timeout=600)
            assert len(found) == args.requests

        for replica in replicas:  # each replica builds its own copy of the index first
            async with grpc.aio.insecure_channel(replica.address) as direct:
                await Client(direct, MD).search("valve", table_id="kb", k=5)
        cpu_before = sum(cpu_seconds(r) for r in replicas)
        started = time.perf_counter()
        sem = asyncio.Semaphore(16)

        async def limited(coro):  # type: ignore[no-untyped-def]
            async with sem:
                await coro

        await asyncio.gather(batch(), *(stream(s) for s in range(args.streams)),
                             *(limited(upload(i)) for i in range(args.uploads)),
                             *(limited(search(i)) for i in range(args.searches)))
        seconds = time.perf_counter() - started
        cpu = sum(cpu_seconds(r) for r in replicas) - cpu_before
    return seconds, args.requests + 50 * args.streams + args.uploads + args.searches, cpu


async def run_replicas(count: int, args: argparse.Namespace, fake: object, s3_env: dict[str, str],
                       work: Path) -> tuple[float, int, float]:
    url = await asyncio.to_thread(postgres.create_database)
    replicas = []
    try:
        env = {**server_env(fake), **s3_env, "ROWFORGE_DATABASE_URL": url,
               "ROWFORGE_LOG_LEVEL": "WARNING"}
        replicas = [ServerProcess(work / f"r{count}-{i}", env={
            **env, "ROWFORGE_WORKER_ID": f"bench-{count}-{i}"}).start() for i in range(count)]
        with balancer(replicas, work / f"lb{count}") as (target, options):
            seconds, requests, cpu = await mixed(target, options, args, replicas)
        idle_before = sum(cpu_seconds(r) for r in replicas)
        await asyncio.sleep(seconds)  # the replicas' background work, no calls
        idle = sum(cpu_seconds(r) for r in replicas) - idle_before
        print(f"  (idle replicas over as long: {idle:.2f} s CPU)")
        return seconds, requests, cpu
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
            for table in ("a", "b"):
                await knowledge_table(kb, table, args.evict_rows)
            for table in ("a", "b"):  # indexes built and saved at least once
                await kb.search("valve pressure", table_id=table, k=5)
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
            rows = []
            for count in (int(c) for c in args.replicas.split(",")):
                seconds, requests, cpu = await run_replicas(count, args, fake, s3_env, work)
                rows.append((count, requests / seconds, cpu / requests * 1000))
                print(f"{count} replica(s): {requests} requests in {seconds:.2f} s = "
                      f"{requests / seconds:.0f}/s; replicas' CPU {cpu:.2f} s = "
                      f"{cpu / requests * 1000:.2f} ms per request", flush=True)
            base = rows[0][1]
            print("\n| replicas | requests/s | vs 1 replica | replica CPU ms per request |")
            print("|---|---|---|---|")
            for count, rate, cpu_ms in rows:
                print(f"| {count} | {rate:.0f} | {rate / base:.2f}x | {cpu_ms:.2f} |")
            resident, evicted = await eviction(args, fake, work)
            print(f"\nknowledge search p50 ({args.evict_rows} rows): resident "
                  f"{resident * 1000:.1f} ms, evicted (loaded on demand) {evicted * 1000:.1f} ms "
                  f"= {evicted / resident:.1f}x")
        print(f"load average after: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
