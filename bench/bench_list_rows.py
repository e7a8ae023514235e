"""ListRows latency with a where filter over 100,000 rows.

Fills an action table (category str, n int, note str, answer LLM str) with ``--rows`` rows
through the TableStore in-process, then times ``ListRows(where='"category" = 'c7' AND "n" >
500', limit=100)`` three ways, in one run:

* baseline: the equivalent raw SQL (page + count) with the stdlib ``sqlite3`` module on the
  same file, no ORM, no schema lookup, no conversion;
* domain: ``TableStore.get_table`` + ``TableStore.list_rows`` in-process (what the servicer
  does minus protobuf);
* gRPC: ``TableService/ListRows`` against a real server subprocess on the same database.

The store caches the ``total`` count of a filter until the table is written (SQLite only), so
each path is timed "cold" (count computed every call: the cache is off in-process, and over
gRPC the threshold varies per call, 500..549) and "cached" (the same filter repeated).

Prints p50/p99 (ms) and the ratios to the baseline. Target: p50 under 5 ms.

Run: ``.venv/bin/python bench/bench_list_rows.py [--rows 100000] [--iterations 300]``
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _machine import print_machine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc

from rowforge.server.auth import ensure_default_project
from rowforge.server.providers.registry import ModelRegistry
from rowforge.server.storage.db import Database
from rowforge.server.tables.model import ColumnSchema, LLMGenConfig
from rowforge.server.tables.store import SQLITE_MMAP_BYTES, RowQuery, TableStore
from rowforge.v1 import common_pb2, table_service_pb2, table_service_pb2_grpc
from tests.support.server import ServerProcess

WHERE = "\"category\" = 'c7' AND \"n\" > 500"
TABLE = "bench"


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return statistics.median(ordered) * 1000, p99 * 1000


async def fill(url: str, rows: int) -> str:
    """Create and fill the table; return its SQL table name."""
    db = Database(url)
    await db.prepare_schema()
    await ensure_default_project(db)
    store = TableStore(db, models=ModelRegistry.from_config([]))
    schema = await store.create_table("default", "action", TABLE, [
        ColumnSchema("category"), ColumnSchema("n", "int"), ColumnSchema("note"),
        ColumnSchema("answer", gen_config=LLMGenConfig(prompt="Summarise ${note}"))])
    rng = random.Random(42)
    start = time.perf_counter()
    batch = 5000
    for offset in range(0, rows, batch):
        await store.insert_rows(schema, [
            {"category": f"c{rng.randrange(20)}", "n": rng.randrange(1000),
             "note": f"row {offset + i} about topic {rng.randrange(500)}",
             "answer": f"generated text number {offset + i}"}
            for i in range(min(batch, rows - offset))])
    elapsed = time.perf_counter() - start
    print(f"inserted {rows:,} rows in {elapsed:.1f} s ({rows / elapsed:,.0f} rows/s, "
          f"batches of {batch} through TableStore.insert_rows)")
    await db.close()
    return schema.storage_id


def bench_raw(path: Path, storage_id: str, iterations: int) -> list[float]:
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA mmap_size={SQLITE_MMAP_BYTES}")  # as the store's connections
    # Column names as the store lays them out: c_1 category, c_2 n, c_3 note, c_4 answer.
    page_sql = (f"SELECT rid, id, updated_at, c_1, s_1, c_2, s_2, c_3, s_3, c_4, s_4 "
                f"FROM {storage_id} WHERE c_1 = ? AND c_2 > ? ORDER BY rid LIMIT 101")
    count_sql = f"SELECT count(*) FROM {storage_id} WHERE c_1 = ? AND c_2 > ?"
    samples = []
    for _ in range(iterations):
        start = time.perf_counter()
        rows = conn.execute(page_sql, ("c7", 500)).fetchall()
        conn.execute(count_sql, ("c7", 500)).fetchone()
        samples.append(time.perf_counter() - start)
    assert len(rows) == 101
    conn.close()
    return samples


async def bench_domain(url: str, iterations: int, *, cached: bool) -> list[float]:
    db = Database(url)
    store = TableStore(db, models=ModelRegistry.from_config([]))
    store.rows.count_cache = cached
    samples = []
    for i in range(iterations + 20):
        start = time.perf_counter()
        schema = await store.get_table("default", "action", TABLE)
        page = await store.list_rows(schema, RowQuery(where=WHERE, limit=100))
        if i >= 20:  # warm-up: connection pool, statement caches
            samples.append(time.perf_counter() - start)
    assert len(page.items) == 100
    print(f"matching rows: {page.total:,}")
    await db.close()
    return samples


async def bench_grpc(address: str, iterations: int, *, vary: bool) -> list[float]:
    samples = []
    async with grpc.aio.insecure_channel(address) as channel:
        stub = table_service_pb2_grpc.TableServiceStub(channel)
        for i in range(iterations + 20):
            # Varying the threshold a little keeps the work the same but defeats the count
            # cache (cold); a repeated filter is served its count from the cache (warm).
            where = WHERE.replace("500", str(500 + i % 50)) if vary else WHERE
            request = table_service_pb2.ListRowsRequest(
                table_type=common_pb2.TABLE_TYPE_ACTION, table_id=TABLE, where=where, limit=100)
            start = time.perf_counter()
            reply = await stub.ListRows(request)
            if i >= 20:
                samples.append(time.perf_counter() - start)
    assert len(reply.items) == 100
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--iterations", type=int, default=300)
    args = parser.parse_args()
    print_machine("sqlalchemy", "aiosqlite", "grpcio")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        db_path = data / "rowforge.db"
        url = f"sqlite+aiosqlite:///{db_path}"
        storage_id = asyncio.run(fill(url, args.rows))
        results = {
            "raw sqlite3 (baseline)": bench_raw(db_path, storage_id, args.iterations),
            "TableStore, count cold": asyncio.run(bench_domain(url, args.iterations,
                                                               cached=False)),
            "TableStore, count cached": asyncio.run(bench_domain(url, args.iterations,
                                                                 cached=True)),
        }
        with ServerProcess(data) as server:
            results["gRPC, count cold"] = asyncio.run(bench_grpc(
                server.address, args.iterations, vary=True))
            results["gRPC, count cached"] = asyncio.run(bench_grpc(
                server.address, args.iterations, vary=False))
    base_p50, _ = percentiles(results["raw sqlite3 (baseline)"])
    print(f"\nListRows where={WHERE!r} limit=100 over {args.rows:,} rows, "
          f"{args.iterations} calls each (SQLite)")
    print(f"{'path':<28}{'p50 ms':>9}{'p99 ms':>9}{'p50 / baseline':>16}")
    for name, samples in results.items():
        p50, p99 = percentiles(samples)
        print(f"{name:<28}{p50:>9.2f}{p99:>9.2f}{p50 / base_p50:>15.1f}x")


if __name__ == "__main__":
    main()
