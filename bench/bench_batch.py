"""Batch jobs end to end: a real server subprocess, the fake OpenAI server in its own process.

Scenario 1 (``--n`` requests, default 10,000, against the fake at ``--latency`` 100 ms, for
each ``--concurrency`` (default 64 and 256 = the server's ``batch_workers``) and each
``--transports`` route of the model, ``openai`` (the fast path) and ``litellm``): wall time
from SubmitJob to the last result (followed live with StreamResults), against

* the ideal ``n / concurrency * latency``, and
* a plain ``asyncio.gather`` of the same route's calls (``providers.chat`` on the fast path,
  ``litellm.acompletion`` on litellm) under a semaphore of the same size, in this process,
  against the same fake (same prompts, same settings).

It also prints the CPU seconds per request of the server, of the baseline's process and of
the fake (its benchmark profile: canned 50-token answers, no request log, uvloop): the
difference between server and baseline is what our scheduling (claims, leases, rate limiter,
recording, streaming) costs.

Scenario 2 (``--big-n`` requests, default 100,000, on the built-in offline chat model, so the
run measures our pipeline and not a provider): the server's peak RSS while the job is added,
processed and streamed, the processing rate, and how fast StreamResults delivers every result
from cursor 0.

Run: ``.venv/bin/python bench/bench_batch.py [--n 10000] [--big-n 100000] [--latency 0.1]
[--concurrency 64,256] [--transports openai,litellm]`` (``--n 0`` or ``--big-n 0`` skips a
scenario).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

from _machine import print_machine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import grpc

from rowforge.v1 import batch_job_service_pb2 as pb
from rowforge.v1 import batch_job_service_pb2_grpc
from tests.support.server import ServerProcess

KEY_ENV = "ROWFORGE_BENCH_FAKE_KEY"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def prompt(i: int) -> str:
    return f"Write one sentence about item number {i} of the catalogue."


# --- process measurements ----------------------------------------------------------------

def rss_kb(pid: int, field: str = "VmRSS") -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


class RssSampler:
    """Highest VmRSS of a process while active (sampled every 20 ms)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kb = max(self.peak_kb, rss_kb(self.pid))
            self._stop.wait(0.02)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def start_fake(latency: float) -> tuple[subprocess.Popen[str], str]:
    from tests.fakes.openai_server import spawn

    return spawn(latency=latency)


# --- the baseline -------------------------------------------------------------------------

async def baseline(base_url: str, n: int, concurrency: int, max_tokens: int, transport: str
                   ) -> tuple[float, float]:
    """Wall seconds and CPU seconds per call of ``n`` plain calls of one route (``openai``:
    the fast path through ``providers.chat``; ``litellm``: ``litellm.acompletion`` with the
    server's settings), ``concurrency`` at a time."""
    from rowforge.server.providers import ModelSpec, Providers, litellm_client

    spec = ModelSpec(id="fake/gpt", route="openai/fake-gpt", api_base=base_url,
                     api_key_env=KEY_ENV, transport=transport)
    semaphore = asyncio.Semaphore(concurrency)
    providers = Providers()
    await providers.start([spec])
    litellm = litellm_client.load() if transport == "litellm" else None

    async def one(i: int) -> None:
        async with semaphore:
            messages = [{"role": "user", "content": prompt(i)}]
            if litellm is None:
                result = await providers.chat(spec, messages, temperature=0.5,
                                              max_tokens=max_tokens, timeout=60.0)
                assert result.text
                return
            kwargs = litellm_client.request_kwargs(spec, messages=messages, temperature=0.5,
                                                   max_tokens=max_tokens, timeout=60.0)
            response = await litellm.acompletion(**kwargs)
            assert response.choices[0].message.content

    try:
        await asyncio.gather(*(one(-1 - i) for i in range(concurrency)))  # warm connections
        cpu = cpu_s(os.getpid())
        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        return time.perf_counter() - started, (cpu_s(os.getpid()) - cpu) / n
    finally:
        await providers.aclose()


# --- our server ---------------------------------------------------------------------------

async def add_requests(stub: batch_job_service_pb2_grpc.BatchJobServiceStub, job_id: str,
                       n: int) -> None:
    async def messages() -> AsyncIterator[pb.StreamAddRequestsRequest]:
        for start in range(0, n, 100):
            yield pb.StreamAddRequestsRequest(job_id=job_id, requests=[
                pb.BatchRequest(request_id=f"r{i}",
                                content_parts=[pb.ContentPart(text=prompt(i))])
                for i in range(start, min(n, start + 100))])

    reply = await stub.StreamAddRequests(messages(), timeout=3600)
    assert reply.total_requests == n, reply


async def run_job(address: str, model: str, n: int, max_tokens: int
                  ) -> tuple[float, float, pb.Job]:
    """Create and fill a job, then time SubmitJob → last result; returns (fill s, run s, job)."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = batch_job_service_pb2_grpc.BatchJobServiceStub(channel)
        job = (await stub.CreateJob(pb.CreateJobRequest(model=model,
                                                        max_output_tokens=max_tokens))).job
        started = time.perf_counter()
        await add_requests(stub, job.job_id, n)
        fill_s = time.perf_counter() - started
        started = time.perf_counter()
        await stub.SubmitJob(pb.SubmitJobRequest(job_id=job.job_id))
        count, final = 0, None
        async for message in stub.StreamResults(pb.StreamResultsRequest(job_id=job.job_id),
                                                timeout=3600):
            if message.HasField("result"):
                count += 1
            else:
                final = message.job
        run_s = time.perf_counter() - started
    assert final is not None and count == n, (count, final)
    assert final.metrics.successful_requests == n, final.metrics
    return fill_s, run_s, final


async def stream_all(address: str, job_id: str) -> tuple[int, float]:
    options = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
    async with grpc.aio.insecure_channel(address, options=options) as channel:
        stub = batch_job_service_pb2_grpc.BatchJobServiceStub(channel)
        started = time.perf_counter()
        count = 0
        async for message in stub.StreamResults(pb.StreamResultsRequest(job_id=job_id),
                                                timeout=3600):
            count += message.HasField("result")
        return count, time.perf_counter() - started


def server_env(base_url: str, concurrency: int, transport: str = "openai") -> dict[str, str]:
    models = [{"id": "fake/gpt", "route": "openai/fake-gpt", "api_base": base_url,
               "api_key_env": KEY_ENV, "capabilities": ["chat"], "transport": transport}]
    return {"ROWFORGE_MODELS": json.dumps(models), KEY_ENV: "sk-bench",
            "ROWFORGE_BATCH_WORKERS": str(concurrency), "ROWFORGE_LOG_LEVEL": "WARNING"}


def scenario_latency(args: argparse.Namespace, work: Path, transport: str,
                     c: int) -> None:
    n, latency = args.n, args.latency
    fake, base_url = start_fake(latency)
    os.environ[KEY_ENV] = "sk-bench"
    try:
        base_s, base_cpu = asyncio.run(baseline(base_url, n, c, args.max_tokens, transport))
        env = server_env(base_url, c, transport)
        with ServerProcess(work / f"s1-{transport}-{c}", env=env).start() as server:
            assert server.process is not None
            pid = server.process.pid
            # warm up: connections and first calls, off the clock
            asyncio.run(run_job(server.address, "fake/gpt", c, args.max_tokens))
            cpu1, fake1 = cpu_s(pid), cpu_s(fake.pid)
            with RssSampler(pid) as rss:
                fill_s, run_s, job = asyncio.run(run_job(server.address, "fake/gpt", n,
                                                         args.max_tokens))
            server_cpu = (cpu_s(pid) - cpu1) / n
            fake_cpu = (cpu_s(fake.pid) - fake1) / n
    finally:
        fake.kill()
        fake.wait()
    ideal = n / c * latency
    print(f"Scenario 1: {n} requests, fake latency {latency * 1000:.0f} ms, concurrency {c}, "
          f"transport {transport} (load avg {os.getloadavg()[0]:.2f})")
    print(f"  ideal (n / concurrency x latency)     {ideal:8.2f} s")
    print(f"  baseline: asyncio.gather of calls     {base_s:8.2f} s   "
          f"({base_s / ideal:.2f}x ideal; {base_cpu * 1000:.2f} ms CPU per call)")
    print(f"  rowforge batch job (submit -> last)   {run_s:8.2f} s   "
          f"({run_s / ideal:.2f}x ideal, {run_s / base_s:.2f}x baseline, "
          f"{n / run_s:.0f} requests/s end to end)")
    print(f"    job duration (first claim -> end)   {job.metrics.duration_seconds:8.2f} s   "
          f"throughput {job.metrics.throughput_rps:.0f} requests/s")
    print(f"    added wall per request              {(run_s - base_s) / n * 1000:8.3f} ms")
    print(f"    server CPU per request              {server_cpu * 1000:8.3f} ms   "
          f"(baseline process {base_cpu * 1000:.3f} ms: scheduling overhead "
          f"{(server_cpu - base_cpu) * 1000:.3f} ms)")
    print(f"    fake server CPU per request         {fake_cpu * 1000:8.3f} ms   "
          f"({fake_cpu * n / run_s * 100:.0f}% of a core during the job)")
    print(f"    populating (StreamAddRequests)      {fill_s:8.2f} s   "
          f"({n / fill_s:.0f} requests/s); server peak RSS {rss.peak_kb / 1024:.0f} MiB\n",
          flush=True)


def scenario_big(args: argparse.Namespace, work: Path) -> None:
    n = args.big_n
    fake, base_url = start_fake(0.0)
    try:
        concurrency = int(args.concurrency.split(",")[0])
        with ServerProcess(work / "s2", env=server_env(base_url, concurrency, "litellm")
                           ).start() as server:
            assert server.process is not None
            pid = server.process.pid
            # a few provider calls first, so litellm is loaded as in a real deployment
            asyncio.run(run_job(server.address, "fake/gpt", 10, 16))
            idle_kb = rss_kb(pid)
            with RssSampler(pid) as rss:
                fill_s, run_s, job = asyncio.run(run_job(server.address, "rowforge/chat", n,
                                                         64))
                count, stream_s = asyncio.run(stream_all(server.address, job.job_id))
            assert count == n
            hwm = rss_kb(pid, "VmHWM")
    finally:
        fake.kill()
    print(f"Scenario 2: {n} requests on the built-in model (our pipeline alone)")
    print(f"  populating (StreamAddRequests)        {fill_s:8.2f} s   ({n / fill_s:.0f} requests/s)")
    print(f"  processing (submit -> last result)    {run_s:8.2f} s   ({n / run_s:.0f} requests/s)")
    print(f"  StreamResults from cursor 0           {stream_s:8.2f} s   "
          f"({count / stream_s:.0f} results/s)")
    print(f"  server RSS: before the job {idle_kb / 1024:.0f} MiB (litellm loaded), peak "
          f"{rss.peak_kb / 1024:.0f} MiB "
          f"(VmHWM {hwm / 1024:.0f} MiB)\n", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="scenario 1 requests (0: skip)")
    parser.add_argument("--big-n", type=int, default=100_000,
                        help="scenario 2 requests (0: skip)")
    parser.add_argument("--latency", type=float, default=0.1, help="fake latency, seconds")
    parser.add_argument("--concurrency", default="64,256",
                        help="scenario 1 concurrencies, comma-separated")
    parser.add_argument("--transports", default="openai,litellm",
                        help="scenario 1 routes of the model, comma-separated")
    parser.add_argument("--max-tokens", type=int, default=64, help="max output tokens")
    args = parser.parse_args()
    print_machine("grpcio", "litellm", "sqlalchemy", "aiohttp", "orjson", "uvloop")
    work = Path(tempfile.mkdtemp(prefix="rowforge-bench-batch-"))
    if args.n:
        for transport in args.transports.split(","):
            for concurrency in (int(c) for c in args.concurrency.split(",")):
                scenario_latency(args, work, transport, concurrency)
    if args.big_n:
        scenario_big(args, work)


if __name__ == "__main__":
    main()
