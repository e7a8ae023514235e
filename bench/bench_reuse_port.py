"""One process or several on one port (``reuse_port``): HybridSearch throughput from many
client connections, and the servers' CPU per call, in one run.

Setup per process count: a fresh PostgreSQL database (127.0.0.1:5432 or
``ROWFORGE_TEST_POSTGRES_URL``), one shared ``files_dir``, ``N`` ``rowforge serve`` processes
on one port with ``reuse_port`` (the kernel spreads connections over them), a 500-row
knowledge table (built-in embedding model). ``--clients`` client processes, each on a
connection of its own, call HybridSearch in a closed loop (``--calls`` each). Each process
count is measured ``--rounds`` times, alternating, so both see the same machine.

On a machine with ``C`` cores, one Python process serves at most about one core (its event
loop holds the GIL); several processes can use the rest. The clients share the cores too,
so on a small machine the ceiling is low for everyone: the CPU per call says what a second
process costs, the throughput what it gains here.

Run::

    .venv/bin/python bench/bench_reuse_port.py [--processes 1,2] [--clients 4] [--calls 300]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _machine import print_machine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc
from bench_cluster import cpu_seconds, knowledge_table

from tests.integration.test_knowledge_service import Client
from tests.support import postgres
from tests.support.server import ServerProcess

MD = (("x-project-id", "bench"),)
WORDS = ["valve", "pressure", "line", "entry", "kb"]


def client(address: str, calls: int, seed: int, out: Any) -> None:
    """Child process: ``calls`` HybridSearch calls on a connection of its own."""
    from rowforge.v1 import knowledge_service_pb2 as kpb
    from rowforge.v1 import knowledge_service_pb2_grpc

    with grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
        stub = knowledge_service_pb2_grpc.KnowledgeServiceStub(ch)
        requests = [kpb.HybridSearchRequest(
            table_id="kb", query=f"{WORDS[(seed + i) % 5]} v{(seed * 7 + i) % 37}", k=10,
            legacy_values=False) for i in range(calls)]
        for request in requests[:10]:
            stub.HybridSearch(request, metadata=MD)
        out.send("ready")
        out.recv()  # start together
        times = []
        for request in requests:
            start = time.perf_counter()
            stub.HybridSearch(request, metadata=MD)
            times.append(time.perf_counter() - start)
    out.send(times)
    out.close()


def start(count: int, database: str, files: Path, work: Path) -> list[ServerProcess]:
    env = {"ROWFORGE_DATABASE_URL": database, "ROWFORGE_REUSE_PORT": "true",
           "ROWFORGE_FILES_DIR": str(files), "ROWFORGE_BATCH_WORKERS": "4"}  # built-in models
    servers: list[ServerProcess] = []
    for i in range(count):
        port = servers[0].port if servers else 0
        servers.append(ServerProcess(work / f"p{i}", env=dict(env, ROWFORGE_WORKER_ID=f"p{i}"),
                                     port=port).start())
    return servers


def measure(address: str, servers: list[ServerProcess], args: argparse.Namespace
            ) -> tuple[float, float, float]:
    """(calls/s, p50 ms, servers' CPU ms per call)."""
    ctx = multiprocessing.get_context("spawn")
    pipes, children = [], []
    for seed in range(args.clients):
        ours, theirs = ctx.Pipe()
        child = ctx.Process(target=client, args=(address, args.calls, seed, theirs))
        child.start()
        pipes.append(ours)
        children.append(child)
    for pipe in pipes:
        assert pipe.recv() == "ready"
    cpu0 = sum(cpu_seconds(s) for s in servers)
    begin = time.perf_counter()
    for pipe in pipes:
        pipe.send("go")
    latencies = [t for pipe in pipes for t in pipe.recv()]
    elapsed = time.perf_counter() - begin
    cpu = sum(cpu_seconds(s) for s in servers) - cpu0
    for child in children:
        child.join()
    calls = len(latencies)
    return calls / elapsed, statistics.median(latencies) * 1e3, cpu / calls * 1e3


async def fill(address: str, rows: int) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        await knowledge_table(Client(channel, MD), "kb", rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", default="1,2")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rows", type=int, default=500)
    args = parser.parse_args()
    print_machine("grpcio")
    if postgres.postgres_url() is None:
        print(f"skipped: {postgres.SKIP_REASON}")
        return
    counts = [int(c) for c in args.processes.split(",")]
    work = Path(tempfile.mkdtemp(prefix="rowforge-bench-reuse-port-"))
    results: dict[int, list[tuple[float, float, float]]] = {c: [] for c in counts}
    try:
        setups = {}
        for count in counts:
            database = postgres.create_database()
            servers = start(count, database, work / f"files-{count}", work / f"n{count}")
            asyncio.run(fill(servers[0].address, args.rows))
            setups[count] = (database, servers)
        for _ in range(args.rounds):
            for count in counts:
                servers = setups[count][1]
                results[count].append(measure(servers[0].address, servers, args))
        for database, servers in setups.values():
            for server in servers:
                server.terminate()
            postgres.drop_database(database)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = statistics.median(r[0] for r in results[counts[0]])
    print(f"\nHybridSearch, {args.clients} client processes x {args.calls} calls, "
          f"{args.rows}-row knowledge table, {args.rounds} alternating rounds (medians):")
    print(f"{'processes':>9} | {'calls/s':>8} | {'vs ' + str(counts[0]):>6} | {'p50 ms':>7} | "
          f"{'server CPU ms/call':>18}")
    for count in counts:
        rate = statistics.median(r[0] for r in results[count])
        p50 = statistics.median(r[1] for r in results[count])
        cpu = statistics.median(r[2] for r in results[count])
        print(f"{count:>9} | {rate:>8.0f} | {rate / base:>5.2f}x | {p50:>7.2f} | {cpu:>18.2f}")


if __name__ == "__main__":
    main()
