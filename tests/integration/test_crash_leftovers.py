"""A SIGKILLed server leaves a partial upload and its sandbox directory; the next start
removes both at once (not after an age limit), and keeps what a live writer holds."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from rowforge.server import leftovers
from rowforge.v1 import file_service_pb2, file_service_pb2_grpc, table_service_pb2_grpc
from tests.conftest import server_env
from tests.integration.generation_support import add_rows, create_table, input_col, python_col
from tests.support.server import ServerProcess

MD = (("x-project-id", "crash-test"),)


def wait_for(condition, what: str, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


async def test_start_sweeps_what_a_killed_server_left(tmp_path: Path, fake_openai: object) -> None:
    data = tmp_path / "data"
    parts_dir = data / "files" / "tmp"
    sandbox_dir = data / "sandbox"
    env = server_env(fake_openai)
    first = ServerProcess(data, env=env).start()
    try:
        async with grpc.aio.insecure_channel(first.address) as channel:
            # A Python cell makes the sandbox's directory under the data dir.
            stub = table_service_pb2_grpc.TableServiceStub(channel)
            await create_table(stub, MD, "t", [input_col("a"),
                                               python_col("b", "row['b'] = row['a'] * 2")])
            reply = await add_rows(stub, MD, "t", [{"a": "x"}])
            assert reply.rows[0].columns["b"].value.string_value == "xx"
            runs = [p.name for p in sandbox_dir.iterdir()]
            assert len(runs) == 1 and runs[0].startswith(f"run-{leftovers.HOST}-"), runs

            # An upload in progress when the server dies.
            sent = asyncio.Event()
            hold = asyncio.Event()

            async def parts() -> AsyncIterator[file_service_pb2.UploadFileRequest]:
                yield file_service_pb2.UploadFileRequest(metadata=file_service_pb2.FileMetadata(
                    name="big.txt", content_type="text/plain", size=64 << 20))
                for _ in range(8):
                    yield file_service_pb2.UploadFileRequest(chunk=b"a" * (1 << 20))
                sent.set()
                await hold.wait()

            call = file_service_pb2_grpc.FileServiceStub(channel).UploadFile(parts(), metadata=MD)
            await asyncio.wait_for(sent.wait(), 30)
            await asyncio.to_thread(wait_for, lambda: any(
                p.stat().st_size >= 4 << 20 for p in parts_dir.glob("up-*.part")),
                "the partial upload on disk")
            first.process.kill()  # type: ignore[union-attr]  # SIGKILL: no clean-up runs
            first.process.wait()  # type: ignore[union-attr]
            hold.set()
            with pytest.raises(grpc.RpcError):
                await call
    finally:
        first.kill()
    partial = list(parts_dir.glob("up-*.part"))
    assert len(partial) == 1 and f"-{first.process.pid}-" in partial[0].name  # type: ignore[union-attr]
    assert len(list(sandbox_dir.iterdir())) == 1

    # A live writer's upload (another process of this host that is still running) stays.
    live = await asyncio.create_subprocess_exec("sleep", "120")
    try:
        kept = parts_dir / f"up-{leftovers.HOST}-{live.pid}-{os.urandom(8).hex()}.part"
        kept.write_bytes(b"still being written")
        kept_run = sandbox_dir / f"run-{leftovers.HOST}-{live.pid}-abcdefgh"
        kept_run.mkdir()
        second = ServerProcess(data, env=env).start()
        try:
            assert not partial[0].exists(), "the killed server's .part must go at start"
            assert [p.name for p in sandbox_dir.iterdir()] == [kept_run.name]
            assert kept.exists()
        finally:
            second.terminate()
    finally:
        live.kill()
        await live.wait()
