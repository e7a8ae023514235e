"""FileService throughput over loopback, with the server's memory watched during the transfer.

Starts a real server subprocess, uploads then downloads files of ``--size`` MB (1 MiB chunks,
generated stubs, asyncio client) and prints MB/s (median of ``--runs``) and the server's
resident memory: before, peak during the transfers (sampled from ``/proc/<pid>/status``
every 5 ms) and ``VmHWM``. Baselines measured in the same run: a plain TCP socket copy over
loopback (the transport's ceiling), a 1 MiB-chunked disk write + fsync (what an upload must
do) and SHA-256 hashing.

Run: ``.venv/bin/python bench/bench_files.py [--size 256 1024] [--runs 3]``
(MB = 10^6 bytes; a 1 GB file needs about 1 GB free in the temp directory.)
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

from _machine import cpu_seconds, print_machine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc

from rowforge.v1 import file_service_pb2 as pb
from rowforge.v1 import file_service_pb2_grpc
from tests.support.server import ServerProcess

MB = 1_000_000
CHUNK = 1024 * 1024
_BLOCK = os.urandom(CHUNK // 2).hex().encode()  # 1 MiB of text: the file sniffs as text/plain


def _rss_kb(pid: int, field: str = "VmRSS") -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class RssSampler:
    """Highest VmRSS of a process while active (a thread polls /proc every 5 ms)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kb = max(self.peak_kb, _rss_kb(self.pid))
            self._stop.wait(0.005)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


async def _chunks(size: int, tag: bytes, chunk: int) -> AsyncIterator[pb.UploadFileRequest]:
    yield pb.UploadFileRequest(metadata=pb.FileMetadata(name="bench.txt", size=size))
    block = (_BLOCK * (chunk // CHUNK + 1))[:chunk]
    # A per-run first chunk keeps runs from deduplicating into one blob.
    first = tag + block[len(tag):]
    sent = 0
    while sent < size:
        n = min(chunk, size - sent)
        yield pb.UploadFileRequest(chunk=(first if sent == 0 else block)[:n])
        sent += n


class Cpu:
    """CPU seconds of this process (the client) and of the server since the last ``take``."""

    def __init__(self, server_pid: int) -> None:
        self.pid = server_pid
        self.client, self.server = time.process_time(), cpu_seconds(server_pid)

    def take(self) -> tuple[float, float]:
        client, server = time.process_time(), cpu_seconds(self.pid)
        spent = client - self.client, server - self.server
        self.client, self.server = client, server
        return spent


async def transfer(address: str, size: int, run: int, cpu: Cpu, chunk: int = CHUNK
                   ) -> tuple[float, float, tuple[float, float], tuple[float, float]]:
    """Upload then download ``size`` bytes; return (upload s, download s, upload CPU (client,
    server), download CPU (client, server))."""
    options = [("grpc.max_receive_message_length", 8 * CHUNK)]
    async with grpc.aio.insecure_channel(address, options=options) as channel:
        stub = file_service_pb2_grpc.FileServiceStub(channel)
        cpu.take()
        start = time.perf_counter()
        reply = await stub.UploadFile(_chunks(size, f"run-{run}-".encode(), chunk))
        upload_s = time.perf_counter() - start
        upload_cpu = cpu.take()
        assert reply.file.size == size, reply.file
        start = time.perf_counter()
        received = 0
        async for message in stub.DownloadFile(pb.DownloadFileRequest(uri=reply.file.uri)):
            received += len(message.chunk)
        download_s = time.perf_counter() - start
        download_cpu = cpu.take()
        assert received == size, received
        await stub.DeleteFile(pb.DeleteFileRequest(uri=reply.file.uri))
    return upload_s, download_s, upload_cpu, download_cpu


def socket_copy_s(size: int) -> float:
    """Seconds to push ``size`` bytes through a loopback TCP socket in 1 MiB sends."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def sink() -> None:
        conn, _ = listener.accept()
        buf = bytearray(CHUNK)
        with conn:
            while conn.recv_into(buf):
                pass

    thread = threading.Thread(target=sink)
    thread.start()
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as client:
        sent = 0
        while sent < size:
            n = min(CHUNK, size - sent)
            client.sendall(_BLOCK[:n])
            sent += n
    thread.join()
    listener.close()
    return time.perf_counter() - start


def disk_write_s(size: int, directory: Path) -> float:
    """Seconds to write ``size`` bytes in 1 MiB writes, then fsync (an upload's disk work)."""
    path = directory / "disk-baseline.bin"
    start = time.perf_counter()
    with open(path, "wb", buffering=0) as f:
        sent = 0
        while sent < size:
            n = min(CHUNK, size - sent)
            f.write(_BLOCK[:n])
            sent += n
        os.fsync(f.fileno())
    elapsed = time.perf_counter() - start
    path.unlink()
    return elapsed


def sha256_s(size: int) -> float:
    digest = hashlib.sha256()
    start = time.perf_counter()
    for _ in range(size // CHUNK):
        digest.update(_BLOCK)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs="+", default=[256, 1024],
                        help="file sizes in MB (default: 256 1024)")
    parser.add_argument("--runs", type=int, default=3, help="runs per size (median reported)")
    parser.add_argument("--chunk-kib", type=int, default=CHUNK // 1024,
                        help="upload chunk size in KiB (default 1024, the recommended size)")
    args = parser.parse_args()
    print_machine("grpcio", "protobuf")

    work = Path(tempfile.mkdtemp(prefix="rowforge-bench-files-"))
    largest = max(args.size) * MB
    try:
        env = {"ROWFORGE_MAX_DOCUMENT_BYTES": str(largest + CHUNK), "ROWFORGE_LOG_LEVEL": "WARNING"}
        with ServerProcess(work / "server", env=env).start() as server:
            assert server.process is not None
            pid = server.process.pid
            time.sleep(0.5)
            idle_kb = _rss_kb(pid)
            print(f"server pid {pid}: RSS at rest {idle_kb / 1024:.0f} MiB\n")
            header = (f"{'size':>8} | {'upload MB/s':>11} | {'download MB/s':>13} | "
                      f"{'socket MB/s':>11} | {'disk MB/s':>9} | {'sha256 MB/s':>11} | "
                      f"{'up/socket':>9} | {'down/socket':>11} | {'server peak RSS':>15}")
            print(header)
            print("-" * len(header))
            for size_mb in args.size:
                size = size_mb * MB
                ups, downs, costs = [], [], []
                cpu = Cpu(pid)
                with RssSampler(pid) as sampler:
                    for run in range(args.runs):
                        up, down, up_cpu, down_cpu = asyncio.run(
                            transfer(server.address, size, run, cpu, args.chunk_kib * 1024))
                        # CPU ms per MB: client and server, upload and download
                        costs.append([c * 1e3 / (size / MB) for c in (*up_cpu, *down_cpu)])
                        ups.append(size / up / MB)
                        downs.append(size / down / MB)
                sock = statistics.median(size / socket_copy_s(size) / MB for _ in range(3))
                disk = size / disk_write_s(size, work) / MB
                sha = size / sha256_s(size) / MB
                up, down = statistics.median(ups), statistics.median(downs)
                growth = (sampler.peak_kb - idle_kb) / 1024
                print(f"{size_mb:>5} MB | {up:>11.0f} | {down:>13.0f} | {sock:>11.0f} | "
                      f"{disk:>9.0f} | {sha:>11.0f} | {up / sock:>9.2f} | {down / sock:>11.2f} | "
                      f"{sampler.peak_kb / 1024:>6.0f} MiB (+{growth:.0f})", flush=True)
                cost = [statistics.median(c[i] for c in costs) for i in range(4)]
                print(f"{'':>8}   CPU ms per MB: upload client {cost[0]:.2f} server {cost[1]:.2f}; "
                      f"download client {cost[2]:.2f} server {cost[3]:.2f}", flush=True)
            print(f"\nserver VmHWM (peak RSS since start): {_rss_kb(pid, 'VmHWM') / 1024:.0f} MiB; "
                  f"runs per size: {args.runs} (median); upload chunks of {args.chunk_kib} KiB, "
                  f"download chunks of {CHUNK // 1024} KiB")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
