"""Row generation throughput end to end, and the engine's own cost per cell.

Table: 3 input columns (``title`` str, ``body`` str, ``n`` int) + 1 LLM column on the built-in
``rowforge/chat`` model (``Summarise ${title}: ${body} (${n})``).

1. **End to end** (the issue's target, at least 2,000 rows/s): a real server subprocess on
   SQLite, ``--rows`` rows through StreamAddRows in calls of 100 rows, ``--streams`` calls in
   flight at once, over loopback with the generated stubs; the client reads every event. The
   same through unary AddRows for comparison.
2. **In process** (target: engine overhead under 0.3 ms per cell): the engine over the real
   TableStore on SQLite and over an in-memory store, against the baselines measured in the
   same run: the bare built-in model calls (whole, as the engine makes them, and streamed)
   for the same prompts, and plain
   ``sqlite3`` inserts + updates of the same rows (100 per transaction). Engine overhead per
   cell = engine time - bare model time. Then where the time goes: wall time inside each
   phase (insert, model, write_cells, events; write_cells includes waiting for the shared
   commit), the group-commit batch size, and cProfile's top functions.
3. **Where the server's time goes** (end to end): the server's CPU per row split between its
   event-loop thread and its other threads (SQLite connections, the gRPC poller), and with
   ``--profile`` a py-spy sampling of the server during the StreamAddRows run, its samples
   sorted into gRPC transport, built-in model, engine, table store, protobuf conversion, GC
   and idle.

4. **One LLM column on a real HTTP provider, through each route** (``--llm-rows``, default
   2,000 per route): the same server configured with the fake OpenAI server (its own process,
   canned 50-token answers, ``--llm-latency`` seconds per answer) as two models, one on the
   ``openai`` transport (the fast path) and one on ``litellm``; rows/s through StreamAddRows
   for each in the same run, with the server's and the fake's CPU per row.

Run: ``.venv/bin/python bench/bench_add_rows.py [--rows 10000] [--streams 2] [--profile]
[--llm-rows 2000] [--llm-latency 0]``
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from _machine import cpu_seconds, print_machine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc
from google.protobuf import struct_pb2

from rowforge.server.config import Settings
from rowforge.server.providers import Message, ModelRegistry, chat, default_providers, stream_chat
from rowforge.server.storage.db import Database
from rowforge.server.tables.engine import RowEngine
from rowforge.server.tables.model import ColumnSchema, LLMGenConfig
from rowforge.server.tables.store import TableStore
from rowforge.v1 import common_pb2, table_service_pb2_grpc
from rowforge.v1 import table_service_pb2 as pb
from tests.support.server import ServerProcess

BATCH = 100
PROMPT = "Summarise ${title}: ${body} (${n})"
COLUMNS = [ColumnSchema("title"), ColumnSchema("body"), ColumnSchema("n", "int"),
           ColumnSchema("summary", gen_config=LLMGenConfig(model="rowforge/chat",
                                                           prompt=PROMPT))]


#: Settings of the end-to-end server (``--server-env KEY=VALUE``).
SERVER_ENV: dict[str, str] = {}


def row_values(i: int) -> dict[str, Any]:
    return {"title": f"Report {i}", "body": f"Quarterly numbers for region {i % 17} grew "
                                            f"by {i % 9} percent", "n": i}


# -- 1. end to end ---------------------------------------------------------------------------

#: Where a sample of the server's event-loop thread is, by the first matching frame (searched
#: from the innermost frame outwards).
_CATEGORIES = (
    ("built-in model", ("/providers/",)),
    ("table store (SQL, SQLAlchemy, aiosqlite)", (
        "/tables/row_store.py", "/tables/cell_writer.py", "/tables/store.py",
        "/tables/schema_store.py", "/tables/write_sql.py", "/sqlalchemy/", "/aiosqlite/")),
    ("engine", ("/tables/engine/",)),
    ("service: protobuf <-> domain", ("/services/table", "/interceptors.py",
                                      "/protobuf/", "/services/_convert.py")),
)


def _category(frames: list[str]) -> str:
    leaf = frames[-1] if frames else ""
    if leaf.startswith("EpollSelector.select") or leaf.startswith("select "):
        return "idle (waiting for I/O)"
    if "gc_collect" in leaf or leaf.startswith("<gc>"):
        return "garbage collector"
    for frame in reversed(frames):
        for name, markers in _CATEGORIES:
            if any(m in frame for m in markers):
                return name
    # Frames of no module of ours: the grpc.aio core (Cython, invisible to py-spy, so it
    # shows as the asyncio callback running it) and the event loop's own work.
    return "gRPC transport + event loop"


class ServerProfile:
    """py-spy sampling the server's event-loop thread while the timed part runs."""

    def __init__(self, pid: int, out: Path) -> None:
        self.pid = pid
        self.out = out
        self.proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> str | None:
        return shutil.which("py-spy") or shutil.which("py-spy", path=str(
            Path(sys.executable).parent))

    def start(self) -> None:
        exe = self.available()
        assert exe is not None
        self.proc = subprocess.Popen(
            [exe, "record", "-p", str(self.pid), "-r", "250", "-f", "raw", "-o",
             str(self.out), "--nonblocking", "--threads", "--gil"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> dict[str, int]:
        """Samples per category (only samples holding the GIL: CPU the server's Python
        threads spend; SQLite and socket work that releases the GIL is not in them)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(30)
        counts: dict[str, int] = defaultdict(int)
        if not self.out.exists():
            return counts
        for line in self.out.read_text(encoding="utf-8", errors="replace").splitlines():
            stack, _, n = line.rpartition(" ")
            if not stack or not n.isdigit():
                continue
            frames = stack.split(";")
            thread, frames = frames[0], frames[1:]
            if "MainThread" in thread:
                counts[_category(frames)] += int(n)
            else:
                counts["other threads (holding the GIL)"] += int(n)
        return counts


def _struct(values: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(values)
    return out


async def end_to_end(rows: int, streams: int, unary_rows: int,
                     profile: bool = False) -> dict[str, Any]:
    data_dir = Path(tempfile.mkdtemp(prefix="bench-add-rows-"))
    server = ServerProcess(data_dir, env=SERVER_ENV)
    out: dict[str, Any] = {}
    with server.start():
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = table_service_pb2_grpc.TableServiceStub(channel)
            md = (("x-project-id", "bench"),)
            cols = [pb.Column(id="title", dtype="str"), pb.Column(id="body", dtype="str"),
                    pb.Column(id="n", dtype="int"),
                    pb.Column(id="summary", dtype="str", gen_config=pb.GenConfig(
                        llm=pb.LLMGenConfig(model="rowforge/chat", prompt=PROMPT)))]
            for name in ("streamed", "coalesced", "unary", "warmup"):
                await stub.CreateTable(pb.CreateTableRequest(
                    table_type=common_pb2.TABLE_TYPE_ACTION, table_id=name, cols=cols),
                    metadata=md)
            batches = [[_struct(row_values(i)) for i in range(s, min(s + BATCH, rows))]
                       for s in range(0, rows, BATCH)]

            async def stream_call(table: str, batch: list[struct_pb2.Struct],
                                  coalesce: bool) -> tuple[int, int, int]:
                messages = events = errors = 0
                async for message in stub.StreamAddRows(pb.StreamAddRowsRequest(
                        table_type=common_pb2.TABLE_TYPE_ACTION, table_id=table, data=batch,
                        coalesce_events=coalesce), metadata=md):
                    messages += 1
                    group = message.batch.events if message.WhichOneof("event") == "batch" \
                        else (message,)
                    for event in group:
                        events += 1
                        if event.WhichOneof("event") == "completed":
                            errors += event.completed.error_count
                return messages, events, errors

            for batch in batches[:5]:  # warm up both processes (imports, caches, JIT-less paths)
                await stream_call("warmup", batch, False)
                await stream_call("warmup", batch, True)

            assert server.process is not None
            pid = server.process.pid

            async def streamed(table: str, coalesce: bool, spy: Any = None) -> dict[str, Any]:
                queue = list(batches)
                totals = [0, 0, 0]

                async def worker() -> None:
                    while queue:
                        for i, n in enumerate(await stream_call(table, queue.pop(), coalesce)):
                            totals[i] += n

                server_cpu = cpu_seconds(pid)
                loop_cpu = cpu_seconds(pid, pid)  # the main thread runs the event loop
                client_cpu = time.process_time()
                start = time.perf_counter()
                await asyncio.gather(*(worker() for _ in range(streams)))
                elapsed = time.perf_counter() - start
                result = {
                    "server_cpu_us": (cpu_seconds(pid) - server_cpu) / rows * 1e6,
                    "loop_cpu_us": (cpu_seconds(pid, pid) - loop_cpu) / rows * 1e6,
                    "client_cpu_us": (time.process_time() - client_cpu) / rows * 1e6,
                    "rows_s": rows / elapsed, "s": elapsed,
                    "messages_per_row": totals[0] / rows, "events_per_row": totals[1] / rows}
                if spy is not None:
                    result["profile"] = spy.stop()
                assert totals[2] == 0, f"{totals[2]} cells failed"
                return result

            spy = None
            if profile and ServerProfile.available():
                spy = ServerProfile(pid, data_dir / "server-profile.txt")
                spy.start()
                await asyncio.sleep(1.0)  # py-spy attaches
            out["stream"] = await streamed("streamed", False, spy)
            out["coalesced"] = await streamed("coalesced", True)

            queue = list(batches[: max(1, unary_rows // BATCH)])
            done = 0

            async def unary_worker() -> None:
                nonlocal done
                while queue:
                    reply = await stub.AddRows(pb.AddRowsRequest(
                        table_type=common_pb2.TABLE_TYPE_ACTION, table_id="unary",
                        data=queue.pop()), metadata=md)
                    done += len(reply.rows)

            start = time.perf_counter()
            await asyncio.gather(*(unary_worker() for _ in range(streams)))
            out["unary_rows_s"] = done / (time.perf_counter() - start)
            for table in ("streamed", "coalesced"):
                listed = await stub.ListRows(pb.ListRowsRequest(
                    table_type=common_pb2.TABLE_TYPE_ACTION, table_id=table, limit=1),
                    metadata=md)
                assert listed.total == rows, listed.total
    return out


# -- 2. in process ----------------------------------------------------------------------------

class Phases:
    """Wall time spent inside wrapped calls, by phase."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def wrap_async(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        async def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - start
                self.calls[name] += 1
        return timed

    def wrap_sink(self, name: str, fn: Callable[[Any], None]) -> Callable[[Any], None]:
        def timed(event: Any) -> None:
            start = time.perf_counter()
            fn(event)
            self.seconds[name] += time.perf_counter() - start
            self.calls[name] += 1
        return timed


class MemoryStore:
    """Just enough of the TableStore for the engine, in dicts (no database)."""

    def __init__(self, real: TableStore) -> None:
        self.real = real
        self.cells: dict[str, Any] = {}

    async def insert_rows(self, schema: Any, rows: Any, **kw: Any) -> Any:
        # The real store's validation and typing, without the transaction.
        from rowforge.server.tables.ids import uuid7
        from rowforge.server.tables.model import Cell, CellStatus, Row

        out = []
        for values in rows:
            cells = {c.id: (Cell(value=values.get(c.id)) if c.gen_config is None
                            else Cell(value=None, status=CellStatus.PENDING))
                     for c in schema.columns}
            out.append(Row(id=uuid7(), update_time=None, cells=cells))  # type: ignore[arg-type]
        return out

    async def write_cells(self, schema: Any, row_id: str, cells: Any) -> None:
        self.cells[row_id] = cells


async def bare_model(prompts: list[str], streamed: bool) -> float:
    registry = ModelRegistry.from_config([])
    spec = registry.get("rowforge/chat")
    start = time.perf_counter()
    for prompt in prompts:
        messages = [Message("user", prompt)]
        if streamed:
            async for _ in stream_chat(spec, messages):
                pass
        else:
            await chat(spec, messages)
    return time.perf_counter() - start


def plain_sqlite(path: Path, rows: int, *, fts: bool = False) -> float:
    """Insert the rows 100 per transaction, then set each row's generated value (updates
    committed 100 at a time): what storing the same rows minimally costs. ``fts``: with an
    FTS5 index kept by triggers, as the table store keeps one."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE t (seq INTEGER PRIMARY KEY, id TEXT UNIQUE, title TEXT, "
                 "body TEXT, n INTEGER, summary TEXT, summary_state TEXT)")
    if fts:
        conn.execute("CREATE VIRTUAL TABLE f USING fts5(title, body, summary, content='t', "
                     "content_rowid='seq')")
        conn.execute("CREATE TRIGGER t_ai AFTER INSERT ON t BEGIN INSERT INTO f(rowid, title, "
                     "body, summary) VALUES (new.seq, new.title, new.body, new.summary); END")
        conn.execute("CREATE TRIGGER t_au AFTER UPDATE OF title, body, summary ON t BEGIN "
                     "INSERT INTO f(f, rowid, title, body, summary) VALUES ('delete', old.seq, "
                     "old.title, old.body, old.summary); INSERT INTO f(rowid, title, body, "
                     "summary) VALUES (new.seq, new.title, new.body, new.summary); END")
    start = time.perf_counter()
    for s in range(0, rows, BATCH):
        values = [row_values(i) for i in range(s, min(s + BATCH, rows))]
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO t VALUES (?, ?, ?, ?, ?, NULL, 'pending')",
                         [(s + j, f"id{s + j}", v["title"], v["body"], v["n"])
                          for j, v in enumerate(values)])
        conn.execute("COMMIT")
        conn.execute("BEGIN")
        conn.executemany("UPDATE t SET summary = ?, summary_state = 'done' WHERE id = ?",
                         [(f"You wrote: Summarise {v['title']}: {v['body']}. The key points "
                           "are report, region and numbers.", f"id{s + j}")
                          for j, v in enumerate(values)])
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed


async def engine_run(store: Any, schema: Any, rows: int, *, streamed: bool, sink_wrap: Any = None,
                     cpu: list[float] | None = None) -> float:
    """Seconds to generate ``rows`` rows; ``cpu`` receives the event-loop thread's CPU
    seconds (the SQLite connections' threads are not in it)."""
    engine = RowEngine(store=store, models=ModelRegistry.from_config([]), settings=Settings())
    events: list[Any] = []
    sink = events.append if streamed else None
    if sink is not None and sink_wrap is not None:
        sink = sink_wrap(sink)
    await engine.add_rows(schema, [row_values(i) for i in range(BATCH)], sink=sink)  # warm up
    start, thread_start = time.perf_counter(), time.thread_time()
    for s in range(0, rows, BATCH):
        events.clear()
        await engine.add_rows(schema, [row_values(i) for i in range(s, min(s + BATCH, rows))],
                              sink=sink)
    if cpu is not None:
        cpu.append(time.thread_time() - thread_start)
    return time.perf_counter() - start


async def in_process(rows: int, profile: bool) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-engine-"))
    db = Database(f"sqlite+aiosqlite:///{tmp / 'engine.db'}")
    await db.prepare_schema()
    store = TableStore(db, models=ModelRegistry.from_config([]))
    schema = await store.create_table("bench", "action", "engine", COLUMNS)
    memory = MemoryStore(store)

    prompts = [PROMPT.replace("${title}", v["title"]).replace("${body}", v["body"])
               .replace("${n}", str(v["n"])) for v in map(row_values, range(rows))]
    await bare_model(prompts[:200], True)
    model_stream = await bare_model(prompts, True)
    model_whole = await bare_model(prompts, False)
    sqlite_s = plain_sqlite(tmp / "plain.db", rows)
    sqlite_fts_s = plain_sqlite(tmp / "plain_fts.db", rows, fts=True)

    results = {}
    loop_cpu: dict[str, float] = {}
    for label, target, streamed in (("memory store, streamed", memory, True),
                                    ("memory store, unary", memory, False),
                                    ("SQLite TableStore, streamed", store, True),
                                    ("SQLite TableStore, unary", store, False)):
        cpu: list[float] = []
        results[label] = await engine_run(target, schema, rows, streamed=streamed, cpu=cpu)
        loop_cpu[label] = cpu[0]

    us = 1e6 / rows
    print(f"In process, {rows} rows x 1 LLM cell (built-in model), calls of {BATCH} rows:")
    print(f"  bare model, whole (chat)           : {model_whole * us:7.1f} us/cell  (what the "
          "engine calls for built-in models)")
    print(f"  bare model, streamed (stream_chat) : {model_stream * us:7.1f} us/cell")
    print(f"  plain sqlite3 insert + update      : {sqlite_s * us:7.1f} us/row  "
          f"({rows / sqlite_s:,.0f} rows/s)")
    print(f"  same, with FTS5 triggers           : {sqlite_fts_s * us:7.1f} us/row  "
          f"({rows / sqlite_fts_s:,.0f} rows/s; an action table pays this only once it has "
          "been searched)")
    for label, seconds in results.items():
        model = model_whole  # the engine calls built-in models whole, streamed or not
        print(f"  engine, {label:<27}: {seconds * us:7.1f} us/row  ({rows / seconds:,.0f} rows/s)"
              f"; overhead {(seconds - model) * us:6.1f} us/cell "
              f"(x{seconds / model:.1f} the bare model); event-loop CPU "
              f"{loop_cpu[label] * us:5.1f} us/row")
    sqlite_engine = results["SQLite TableStore, streamed"]
    print(f"  SQLite TableStore engine vs plain sqlite3 + bare model: "
          f"x{sqlite_engine / (sqlite_s + model_whole):.1f}")

    # Where the time goes (SQLite store, streamed).
    phases = Phases()
    store_proxy = SimpleNamespace(
        insert_rows=phases.wrap_async("insert_rows", store.insert_rows),
        write_cells=phases.wrap_async("write_cells", store.write_cells))
    providers = default_providers()  # what the engine calls models through
    providers.chat = phases.wrap_async("model (chat)", providers.chat)  # type: ignore[method-assign]
    writer = store.rows.writer
    flushes, written = writer.flushes, writer.cells_written
    try:
        start = time.perf_counter()
        await engine_run(store_proxy, schema, rows, streamed=True,
                         sink_wrap=lambda sink: phases.wrap_sink("events", sink))
        total = time.perf_counter() - start
    finally:
        del providers.chat  # the class's method again
    print(f"\nWhere the time goes (SQLite TableStore, streamed; wall time {total * us:.0f} us/row;"
          " phases overlap, write_cells includes waiting for the shared commit):")
    for name, seconds in sorted(phases.seconds.items(), key=lambda kv: -kv[1]):
        calls = phases.calls[name]
        print(f"  {name:<22} {seconds * us:8.1f} us/row summed  ({calls} calls, "
              f"{seconds / calls * 1e6:8.1f} us each)")
    batches = writer.flushes - flushes
    cells = writer.cells_written - written
    print(f"  group commit: {batches} transactions for {cells} cells "
          f"({cells / max(1, batches):.1f} cells per commit)")

    # The service's share of "events": engine events -> protobuf messages -> bytes.
    from rowforge.server.services.table_generation import StreamEncoder

    events: list[Any] = []
    engine = RowEngine(store=memory, models=ModelRegistry.from_config([]), settings=Settings())
    await engine.add_rows(schema, [row_values(i) for i in range(BATCH)], sink=events.append)
    start = time.perf_counter()
    for _ in range(max(1, rows // BATCH)):
        encode = StreamEncoder(pb.StreamAddRowsResponse, schema).encode  # one per stream
        for event in events:
            encode(event).SerializeToString()
    convert = time.perf_counter() - start
    print(f"  events -> protobuf -> bytes  {convert * us:8.1f} us/row  "
          f"({len(events) / BATCH:.1f} messages per row; the gRPC send itself is not included)")

    if profile:
        profiler = cProfile.Profile()
        profiler.enable()
        await engine_run(memory, schema, min(rows, 5000), streamed=True)
        profiler.disable()
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(18)
        print("\ncProfile (memory store, streamed), top functions by own time:")
        print("\n".join(text.getvalue().splitlines()[6:32]))
    await store.close()
    await db.close()


# -- 4. one LLM column through each provider route --------------------------------------------

LLM_KEY_ENV = "ROWFORGE_BENCH_FAKE_KEY"


def start_fake(latency: float) -> tuple[subprocess.Popen[str], str]:
    from tests.fakes.openai_server import spawn

    return spawn(latency=latency)


async def llm_routes(rows: int, streams: int, latency: float) -> dict[str, dict[str, float]]:
    """rows/s and CPU per row of StreamAddRows with one LLM column per route."""
    import json

    fake, base = start_fake(latency)
    routes = ("openai", "litellm")
    models = [{"id": f"fake/{t}", "route": "openai/fake-gpt", "api_base": base,
               "api_key_env": LLM_KEY_ENV, "capabilities": ["chat"], "transport": t}
              for t in routes]
    env = {"ROWFORGE_MODELS": json.dumps(models), LLM_KEY_ENV: "sk-bench"}
    out: dict[str, dict[str, float]] = {}
    try:
        server = ServerProcess(Path(tempfile.mkdtemp(prefix="bench-add-rows-llm-")), env=env)
        with server.start(timeout=300):
            assert server.process is not None
            pid = server.process.pid
            async with grpc.aio.insecure_channel(server.address) as channel:
                stub = table_service_pb2_grpc.TableServiceStub(channel)
                md = (("x-project-id", "bench"),)
                for transport in routes:
                    cols = [pb.Column(id="title", dtype="str"), pb.Column(id="body", dtype="str"),
                            pb.Column(id="n", dtype="int"),
                            pb.Column(id="summary", dtype="str", gen_config=pb.GenConfig(
                                llm=pb.LLMGenConfig(model=f"fake/{transport}", prompt=PROMPT,
                                                    max_tokens=64)))]
                    await stub.CreateTable(pb.CreateTableRequest(
                        table_type=common_pb2.TABLE_TYPE_ACTION, table_id=transport,
                        cols=cols), metadata=md)
                batches = [[_struct(row_values(i)) for i in range(s, min(s + BATCH, rows))]
                           for s in range(0, rows, BATCH)]

                async def stream_call(table: str, batch: list[struct_pb2.Struct]) -> int:
                    errors = 0
                    async for message in stub.StreamAddRows(pb.StreamAddRowsRequest(
                            table_type=common_pb2.TABLE_TYPE_ACTION, table_id=table,
                            data=batch), metadata=md, timeout=600):
                        if message.WhichOneof("event") == "completed":
                            errors += message.completed.error_count
                    return errors

                for transport in routes:
                    for batch in batches[:2]:  # warm up: connections, first calls
                        assert await stream_call(transport, batch) == 0
                    queue = list(batches)
                    failed = 0

                    async def worker(table: str = transport,
                                     todo: list[list[struct_pb2.Struct]] = queue) -> None:
                        nonlocal failed
                        while todo:
                            failed += await stream_call(table, todo.pop())

                    cpu, fake_cpu = cpu_seconds(pid), cpu_seconds(fake.pid)
                    start = time.perf_counter()
                    await asyncio.gather(*(worker() for _ in range(streams)))
                    elapsed = time.perf_counter() - start
                    assert failed == 0, f"{failed} cells failed on {transport}"
                    out[transport] = {
                        "rows_s": rows / elapsed,
                        "server_cpu_us": (cpu_seconds(pid) - cpu) / rows * 1e6,
                        "fake_cpu_us": (cpu_seconds(fake.pid) - fake_cpu) / rows * 1e6}
    finally:
        fake.kill()
        fake.wait()
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--streams", type=int, default=2,
                        help="StreamAddRows calls in flight at once")
    parser.add_argument("--unary-rows", type=int, default=3000)
    parser.add_argument("--engine-rows", type=int, default=5000)
    parser.add_argument("--profile", action="store_true", help="print cProfile's top entries")
    parser.add_argument("--skip-server", action="store_true")
    parser.add_argument("--llm-rows", type=int, default=2000,
                        help="rows per route with an LLM column on the fake provider (0: skip)")
    parser.add_argument("--llm-latency", type=float, default=0.0,
                        help="the fake provider's seconds per answer")
    parser.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting of the end-to-end server, e.g. "
                             "ROWFORGE_GIL_SWITCH_INTERVAL_MS=1")
    args = parser.parse_args()
    SERVER_ENV.update(item.split("=", 1) for item in args.server_env)
    print_machine("grpcio", "SQLAlchemy", "aiosqlite", "litellm", "aiohttp", "uvloop")
    if args.llm_rows:
        routes = await llm_routes(args.llm_rows, args.streams, args.llm_latency)
        print(f"One LLM column on the fake OpenAI server (own process, 50-token answers, "
              f"latency {args.llm_latency * 1000:.0f} ms), {args.llm_rows} rows per route "
              f"through StreamAddRows, {args.streams} calls of {BATCH} rows in flight "
              f"(load avg {os.getloadavg()[0]:.2f}):")
        for transport, r in routes.items():
            print(f"  {transport:<8} {r['rows_s']:8,.0f} rows/s   server CPU {r['server_cpu_us']:6.0f}"
                  f" us/row   fake CPU {r['fake_cpu_us']:5.0f} us/row")
        if len(routes) == 2:
            print(f"  fast path / litellm: {routes['openai']['rows_s'] / routes['litellm']['rows_s']:.2f}x "
                  "rows/s")
        print()
    if not args.skip_server:
        e2e = await end_to_end(args.rows, args.streams, args.unary_rows, args.profile)
        print(f"End to end (server subprocess, SQLite, loopback; {args.streams} calls of "
              f"{BATCH} rows in flight):")
        unary = e2e["unary_rows_s"]
        for key, label in (("stream", "StreamAddRows, one event per message"),
                           ("coalesced", "StreamAddRows, coalesce_events")):
            r = e2e[key]
            print(f"  {label}: {args.rows} rows in {r['s']:.2f} s = {r['rows_s']:,.0f} rows/s "
                  f"= {r['rows_s'] / unary:.2f}x AddRows ({r['events_per_row']:.1f} events, "
                  f"{r['messages_per_row']:.2f} messages per row)")
            print(f"    CPU per row: server {r['server_cpu_us']:.0f} us (event-loop thread "
                  f"{r['loop_cpu_us']:.0f} us, other threads: SQLite connections, gRPC poller "
                  f"{r['server_cpu_us'] - r['loop_cpu_us']:.0f} us), client (stubs, decoding) "
                  f"{r['client_cpu_us']:.0f} us")
        print(f"  AddRows (unary, same server): {unary:,.0f} rows/s")
        profile = e2e["stream"].get("profile")
        if profile:
            total = sum(profile.values())
            busy = sum(n for k, n in profile.items() if not k.startswith("idle"))
            print(f"  Where the server's time goes during StreamAddRows (py-spy, {total} samples "
                  "holding the GIL; event-loop thread unless said):")
            for name, n in sorted(profile.items(), key=lambda kv: -kv[1]):
                share = f"{100 * n / busy:5.1f}% of busy" if not name.startswith("idle") else ""
                print(f"    {name:<42} {100 * n / total:5.1f}%  {share}")
        elif args.profile:
            print("  (py-spy not found: no server profile)")
        print()
    if args.engine_rows:
        await in_process(args.engine_rows, args.profile)


if __name__ == "__main__":
    asyncio.run(main())
