"""Knowledge indexes under a memory budget, on a real server: with a budget smaller than the
tables' graphs, searching the tables in turn evicts the least recently searched ones and
loads them again on demand (saved files + catch-up from the change feed, including rows
written while the table was evicted); every answer stays right, and the evictions and load
times show in the logs and the metrics."""

from __future__ import annotations

import asyncio
import re
import urllib.request
from pathlib import Path
from typing import Any

import grpc

from tests.integration.test_knowledge_service import Client, knowledge_env
from tests.support.server import ServerProcess

MD = (("x-project-id", "memory"),)
TABLES = 5
ROWS = 100


def text(table: int, i: int) -> str:
    return f"Table {table} entry {i}: sensor s{i * 13 % 97} reads {i * 7} units, zone z{table}q{i}."


async def assert_found(client: Client, table: int, rows: dict[str, str]) -> None:
    for row_id, row_text in list(rows.items())[::20]:
        reply = await client.search(row_text, table_id=f"kb{table}", k=3)
        assert reply.items[0].row.id == row_id and reply.items[0].vector_rank == 1


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as reply:
        return str(reply.read().decode())


def metric(body: str, name: str) -> float:
    pattern = rf"^{re.escape(name)} ([0-9.e+]+)$"
    match = re.search(pattern, body, re.MULTILINE)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


async def test_tables_searched_in_turn_under_a_small_budget(tmp_path: Path, fake_openai: Any
                                                            ) -> None:
    # Each table's graph is ~6.6 MB (capacity 1,024 of the built-in embedder's vectors): two
    # fit in the budget, five do not.
    env = {**knowledge_env(fake_openai), "ROWFORGE_KNOWLEDGE_INDEX_MEMORY_MB": "14",
           "ROWFORGE_LOG_LEVEL": "INFO", "ROWFORGE_METRICS": "true",
           "ROWFORGE_METRICS_PORT": "0"}
    with ServerProcess(tmp_path, env=env).start() as proc:
        async with grpc.aio.insecure_channel(proc.address) as channel:
            client = Client(channel, MD)
            tables: list[dict[str, str]] = []
            for t in range(TABLES):
                await client.create(f"kb{t}")
                ids = await client.add([{"Title": f"t{t} n{i}", "Text": text(t, i)}
                                        for i in range(ROWS)], table_id=f"kb{t}")
                tables.append(dict(zip(ids, (text(t, i) for i in range(ROWS)), strict=True)))
            for _round in range(2):
                for t in range(TABLES):
                    await assert_found(client, t, tables[t])
            # A row written while its table is evicted is found once the table loads again.
            evicted = [e for e in proc.logs()
                       if e.get("msg") == "evicted a knowledge index under the memory budget"]
            assert evicted, "nothing was evicted"
            gone = evicted[-1]["table"]
            t = int(gone.removeprefix("kb"))
            [new_id] = await client.add([{"Title": "late", "Text": text(t, 999)}], table_id=gone)
            tables[t][new_id] = text(t, 999)
            reply = await client.search(text(t, 999), table_id=gone, k=3)
            assert reply.items[0].row.id == new_id
            for t in range(TABLES):
                await assert_found(client, t, tables[t])
            # Concurrent searches of every table: an index in use is never evicted under it.
            for _round in range(3):
                await asyncio.gather(*(assert_found(client, t, tables[t])
                                       for t in range(TABLES)))
            everything = await client.search("sensor reads units zone", table_id="kb0", k=1000)
            assert {i.row.id for i in everything.items} == set(tables[0])

        logs = proc.logs()
        evictions = [e for e in logs if e.get("msg") == "evicted a knowledge index under the memory budget"]
        reloads = [e for e in logs if e.get("msg") == "opened a knowledge index"
                   and e.get("wasEvicted")]
        assert len(evictions) >= TABLES and len(reloads) >= TABLES
        assert all(e["seconds"] >= 0 and e["rows"] >= ROWS for e in reloads)
        [served] = [e for e in logs if e.get("msg") == "metrics served"]
        body = await asyncio.to_thread(scrape, f"http://{served['address']}/metrics")
        assert metric(body, "rowforge_knowledge_index_evictions_total") == len(evictions)
        assert metric(body, 'rowforge_knowledge_index_load_seconds_count{evicted="true"}') \
            == len(reloads)
        assert metric(body, "rowforge_knowledge_index_memory_bytes") > 0
