"""LLM client candidates side by side: client CPU per call and calls/s against one fake upstream.

Every candidate makes the same calls to the fake OpenAI-compatible server (its benchmark
profile: a canned 50-token answer, no request log, uvloop when installed) running in its own
process: a whole chat completion, a streamed one (50 SSE chunks plus the usage chunk) and an
embedding of one text (``--dims`` floats). Each candidate runs in a fresh subprocess (no
candidate pays for another's imports or garbage), ``--concurrency`` calls at a time, and
reports the median of ``--repeat`` runs of ``--n`` calls:

* ``cpu ms/call``: CPU time of the client process (all threads) per call;
* ``calls/s``: wall-clock throughput (both processes share the machine's cores);
* ``fake ms/call``: the fake server's CPU per call, to show it is not the bottleneck.

Candidates: ``bare-aiohttp`` (the floor: pre-encoded body, response bytes read and dropped,
no JSON), ``aiohttp-orjson`` and ``aiohttp-msgspec`` (pooled session, SSE parsed by hand),
``httpx-orjson``, ``openai-sdk`` (the official client, retries off), ``litellm`` (as the
server configures it), and rowforge's own routes through :class:`Providers`:
``rowforge-openai`` (the fast path) and ``rowforge-litellm``.

Run: ``.venv/bin/python bench/bench_providers.py [--n 2000] [--slow-n 500] [--repeat 3]
[--only a,b]``
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from _machine import print_machine

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

CANDIDATES = ("bare-aiohttp", "aiohttp-orjson", "aiohttp-msgspec", "httpx-orjson",
              "openai-sdk", "litellm", "rowforge-openai", "rowforge-litellm")
OPS = ("chat", "stream", "embed")
SLOW = frozenset({"openai-sdk", "litellm", "rowforge-litellm"})
KEY = "sk-bench"
MODEL = "fake-gpt"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def messages(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Write one sentence about item number {i}."}]


def proc_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


# --- candidates: each returns {op: coroutine function(i)} plus a closer --------------------

Call = Callable[[int], Awaitable[Any]]


def _sse_texts(buffer: bytearray, data: bytes, loads: Callable[[bytes], Any],
               out: list[str]) -> bool:
    """Feed bytes; append content deltas; True once ``[DONE]`` arrived."""
    buffer += data
    done = False
    while True:
        end = buffer.find(b"\n\n")
        if end < 0:
            return done
        event = bytes(buffer[:end])
        del buffer[:end + 2]
        if not event.startswith(b"data: "):
            continue
        payload = event[6:]
        if payload == b"[DONE]":
            done = True
            continue
        chunk = loads(payload)
        for choice in chunk.get("choices") or ():
            content = choice["delta"].get("content")
            if content:
                out.append(content)


async def aiohttp_candidate(base: str, dims: int, codec: str, bare: bool
                            ) -> tuple[dict[str, Call], Callable[[], Awaitable[None]]]:
    import aiohttp

    if codec == "msgspec":
        import msgspec

        dumps, loads = msgspec.json.encode, msgspec.json.decode
    else:
        import orjson

        dumps, loads = orjson.dumps, orjson.loads
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, limit_per_host=256),
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
        skip_auto_headers=("User-Agent",))
    chat_url, embed_url = f"{base}/chat/completions", f"{base}/embeddings"
    fixed_chat = dumps({"model": MODEL, "messages": messages(0), "max_tokens": 64})
    fixed_stream = dumps({"model": MODEL, "messages": messages(0), "max_tokens": 64,
                          "stream": True, "stream_options": {"include_usage": True}})
    # Every candidate asks for base64 embeddings, as the official openai SDK does by default.
    fixed_embed = dumps({"model": "fake-embed", "input": ["item 0"], "dimensions": dims,
                         "encoding_format": "base64"})

    if bare:
        async def chat(i: int) -> Any:
            async with session.post(chat_url, data=fixed_chat) as r:
                return await r.read()

        async def stream(i: int) -> Any:
            async with session.post(chat_url, data=fixed_stream) as r:
                async for _ in r.content.iter_any():
                    pass

        async def embed(i: int) -> Any:
            async with session.post(embed_url, data=fixed_embed) as r:
                return await r.read()
    else:
        async def chat(i: int) -> Any:
            body = dumps({"model": MODEL, "messages": messages(i), "max_tokens": 64})
            async with session.post(chat_url, data=body) as r:
                data = loads(await r.read())
            return data["choices"][0]["message"]["content"], data["usage"]

        async def stream(i: int) -> Any:
            body = dumps({"model": MODEL, "messages": messages(i), "max_tokens": 64,
                          "stream": True, "stream_options": {"include_usage": True}})
            out: list[str] = []
            buffer = bytearray()
            async with session.post(chat_url, data=body) as r:
                async for data in r.content.iter_any():
                    if _sse_texts(buffer, data, loads, out):
                        break
            assert len(out) == 50, len(out)
            return "".join(out)

        async def embed(i: int) -> Any:
            body = dumps({"model": "fake-embed", "input": [f"item {i}"], "dimensions": dims,
                          "encoding_format": "base64"})
            async with session.post(embed_url, data=body) as r:
                data = loads(await r.read())

            return _vectors(data)

    return {"chat": chat, "stream": stream, "embed": embed}, session.close


async def httpx_candidate(base: str, dims: int
                          ) -> tuple[dict[str, Call], Callable[[], Awaitable[None]]]:
    import httpx
    import orjson

    client = httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {KEY}",
                                                       "Content-Type": "application/json"},
                               limits=httpx.Limits(max_connections=256,
                                                   max_keepalive_connections=256))

    async def chat(i: int) -> Any:
        r = await client.post("/chat/completions", content=orjson.dumps(
            {"model": MODEL, "messages": messages(i), "max_tokens": 64}))
        data = orjson.loads(r.content)
        return data["choices"][0]["message"]["content"], data["usage"]

    async def stream(i: int) -> Any:
        body = orjson.dumps({"model": MODEL, "messages": messages(i), "max_tokens": 64,
                             "stream": True, "stream_options": {"include_usage": True}})
        out: list[str] = []
        buffer = bytearray()
        async with client.stream("POST", "/chat/completions", content=body) as r:
            async for data in r.aiter_raw():
                if _sse_texts(buffer, data, orjson.loads, out):
                    break
        assert len(out) == 50, len(out)
        return "".join(out)

    async def embed(i: int) -> Any:
        r = await client.post("/embeddings", content=orjson.dumps(
            {"model": "fake-embed", "input": [f"item {i}"], "dimensions": dims,
             "encoding_format": "base64"}))
        data = orjson.loads(r.content)
        return _vectors(data)

    return {"chat": chat, "stream": stream, "embed": embed}, client.aclose


async def openai_candidate(base: str, dims: int
                           ) -> tuple[dict[str, Call], Callable[[], Awaitable[None]]]:
    import openai

    client = openai.AsyncOpenAI(base_url=base, api_key=KEY, max_retries=0)

    async def chat(i: int) -> Any:
        r = await client.chat.completions.create(model=MODEL, messages=messages(i),
                                                 max_tokens=64)
        return r.choices[0].message.content, r.usage

    async def stream(i: int) -> Any:
        out: list[str] = []
        response = await client.chat.completions.create(
            model=MODEL, messages=messages(i), max_tokens=64, stream=True,
            stream_options={"include_usage": True})
        async for chunk in response:
            for choice in chunk.choices:
                if choice.delta.content:
                    out.append(choice.delta.content)
        assert len(out) == 50, len(out)
        return "".join(out)

    async def embed(i: int) -> Any:
        r = await client.embeddings.create(model="fake-embed", input=[f"item {i}"],
                                           dimensions=dims)
        return r.data[0].embedding

    return {"chat": chat, "stream": stream, "embed": embed}, client.close


async def litellm_candidate(base: str, dims: int
                            ) -> tuple[dict[str, Call], Callable[[], Awaitable[None]]]:
    from rowforge.server.providers import litellm_client

    litellm = litellm_client.load()  # the server's settings: no callbacks, no retries
    common = {"api_base": base, "api_key": KEY, "num_retries": 0, "max_retries": 0}

    async def chat(i: int) -> Any:
        r = await litellm.acompletion(model=f"openai/{MODEL}", messages=messages(i),
                                      max_tokens=64, **common)
        return r.choices[0].message.content, r.usage

    async def stream(i: int) -> Any:
        out: list[str] = []
        response = await litellm.acompletion(
            model=f"openai/{MODEL}", messages=messages(i), max_tokens=64, stream=True,
            stream_options={"include_usage": True}, **common)
        async for chunk in response:
            for choice in chunk.choices:
                if choice.delta.content:
                    out.append(choice.delta.content)
        assert len(out) == 50, len(out)
        return "".join(out)

    async def embed(i: int) -> Any:
        r = await litellm.aembedding(model="openai/fake-embed", input=[f"item {i}"],
                                     dimensions=dims, **common)
        return r.data[0]["embedding"]

    async def close() -> None:
        pass

    return {"chat": chat, "stream": stream, "embed": embed}, close


def _vectors(data: Any) -> Any:
    """The float32 matrix of a base64 embeddings response."""
    import numpy as np  # imported by the candidates that use it, as the others do

    return np.stack([np.frombuffer(base64.b64decode(d["embedding"]), "<f4")
                     for d in data["data"]])


async def rowforge_candidate(base: str, dims: int, transport: str
                             ) -> tuple[dict[str, Call], Callable[[], Awaitable[None]]]:
    from rowforge.server.providers import ModelRegistry, Providers

    os.environ["ROWFORGE_BENCH_KEY"] = KEY
    common = {"api_base": base, "api_key_env": "ROWFORGE_BENCH_KEY", "transport": transport}
    registry = ModelRegistry.from_config([
        {"id": "bench/gpt", "route": f"openai/{MODEL}", "capabilities": ["chat"], **common},
        {"id": "bench/embed", "route": "openai/fake-embed", "capabilities": ["embed"],
         "embedding_size": dims, **common}], include_builtins=False)
    gpt, embedder = registry.get("bench/gpt"), registry.get("bench/embed")
    providers = Providers()
    await providers.start(registry.specs)

    async def chat(i: int) -> Any:
        r = await providers.chat(gpt, messages(i), max_tokens=64)
        return r.text, r.usage

    async def stream(i: int) -> Any:
        out = [c.text async for c in providers.stream_chat(gpt, messages(i), max_tokens=64)
               if c.text]
        assert len(out) == 50, len(out)
        return "".join(out)

    async def embed(i: int) -> Any:
        return (await providers.embed(embedder, [f"item {i}"])).vectors

    return {"chat": chat, "stream": stream, "embed": embed}, providers.aclose


async def make(candidate: str, base: str, dims: int
               ) -> tuple[dict[str, Call], Callable[[], Awaitable[None]]]:
    if candidate in ("bare-aiohttp", "aiohttp-orjson"):
        return await aiohttp_candidate(base, dims, "orjson", candidate == "bare-aiohttp")
    if candidate == "aiohttp-msgspec":
        return await aiohttp_candidate(base, dims, "msgspec", False)
    if candidate == "httpx-orjson":
        return await httpx_candidate(base, dims)
    if candidate == "openai-sdk":
        return await openai_candidate(base, dims)
    if candidate == "litellm":
        return await litellm_candidate(base, dims)
    if candidate.startswith("rowforge-"):
        return await rowforge_candidate(base, dims, candidate.removeprefix("rowforge-"))
    raise SystemExit(f"unknown candidate {candidate!r}")


# --- one candidate, in its own process ------------------------------------------------------

async def measure(call: Call, n: int, concurrency: int, fake_pid: int
                  ) -> tuple[float, float, float]:
    """(client CPU ms per call, calls/s, fake CPU ms per call) of n calls."""
    queue = iter(range(n))

    async def worker() -> None:
        for i in queue:
            await call(i)

    fake0, cpu0, wall0 = proc_cpu_s(fake_pid), time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - wall0
    cpu, fake = time.process_time() - cpu0, proc_cpu_s(fake_pid) - fake0
    return cpu / n * 1000, n / wall, fake / n * 1000


async def run_worker(args: argparse.Namespace) -> None:
    calls, close = await make(args.worker, args.base_url, args.dims)
    results: dict[str, dict[str, float]] = {}
    try:
        for op in OPS:
            call = calls[op]
            await asyncio.gather(*(call(-1 - i) for i in range(args.concurrency * 2)))  # warm
            runs = [await measure(call, args.n, args.concurrency, args.fake_pid)
                    for _ in range(args.repeat)]
            results[op] = {"cpu_ms": statistics.median(r[0] for r in runs),
                           "calls_s": statistics.median(r[1] for r in runs),
                           "fake_ms": statistics.median(r[2] for r in runs)}
    finally:
        await close()
    print(json.dumps(results), flush=True)


def start_fake(dims: int) -> tuple[subprocess.Popen[str], str]:
    from tests.fakes.openai_server import spawn

    return spawn(embedding_size=dims)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="calls per run")
    parser.add_argument("--slow-n", type=int, default=500,
                        help="calls per run of the costly candidates (SDK, litellm)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (median)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--dims", type=int, default=1536, help="embedding size")
    parser.add_argument("--only", default="", help="comma-separated candidates")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--fake-pid", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        asyncio.run(run_worker(args))
        return
    print_machine("aiohttp", "httpx", "orjson", "msgspec", "openai", "litellm", "uvloop")
    chosen = [c for c in CANDIDATES if not args.only or c in args.only.split(",")]
    fake, base = start_fake(args.dims)
    table: dict[str, dict[str, dict[str, float]]] = {}
    try:
        for candidate in chosen:
            out = subprocess.run(
                [sys.executable, __file__, "--worker", candidate, "--base-url", base,
                 "--fake-pid", str(fake.pid),
                 "--n", str(args.slow_n if candidate in SLOW else args.n),
                 "--repeat", str(args.repeat),
                 "--concurrency", str(args.concurrency), "--dims", str(args.dims)],
                capture_output=True, text=True, cwd=ROOT)
            if out.returncode != 0:
                print(f"{candidate}: failed\n{out.stderr[-2000:]}", flush=True)
                continue
            table[candidate] = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{candidate}: done", file=sys.stderr, flush=True)
    finally:
        fake.kill()
        fake.wait()
    print(f"{args.n} calls ({args.slow_n} for {', '.join(sorted(SLOW))}) x {args.repeat} runs "
          f"(median), concurrency {args.concurrency}, "
          f"chat answer 50 tokens, embedding {args.dims} floats; load avg after "
          f"{os.getloadavg()[0]:.2f}\n")
    floor = table.get("bare-aiohttp")
    litellm = table.get("litellm")
    header = (f"{'candidate':<18}" + "".join(
        f"| {op + ' cpu ms':>14} {'calls/s':>8} {'x floor':>7} {'litellm/x':>9} {'fake ms':>7} "
        for op in OPS))
    print(header)
    print("-" * len(header))
    for candidate, ops in table.items():
        line = f"{candidate:<18}"
        for op in OPS:
            r = ops[op]
            vs_floor = r["cpu_ms"] / floor[op]["cpu_ms"] if floor else float("nan")
            vs_litellm = litellm[op]["cpu_ms"] / r["cpu_ms"] if litellm else float("nan")
            line += (f"| {r['cpu_ms']:14.3f} {r['calls_s']:8.0f} {vs_floor:7.2f} "
                     f"{vs_litellm:9.1f} {r['fake_ms']:7.3f} ")
        print(line)


if __name__ == "__main__":
    main()
