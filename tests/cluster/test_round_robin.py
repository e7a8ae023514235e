"""Client-side ``round_robin`` over two real replicas with the gRPC health service watched
(deploy/README.md's service config): calls keep succeeding while one replica drains
(SIGTERM: NOT_SERVING for ``drain_delay_s``, then stop) and after it is gone."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

import grpc

from rowforge.v1 import model_service_pb2, model_service_pb2_grpc
from tests.support.server import ServerProcess

SERVICE_CONFIG = {"loadBalancingConfig": [{"round_robin": {}}],
                  "healthCheckConfig": {"serviceName": ""}}


async def test_calls_survive_a_draining_replica(tmp_path: Path) -> None:
    env = {"ROWFORGE_DRAIN_DELAY_S": "2", "ROWFORGE_GRACE_PERIOD_S": "2"}
    a = ServerProcess(tmp_path / "a", env=env).start()
    b = ServerProcess(tmp_path / "b", env=env).start()
    try:
        target = f"ipv4:{a.address},{b.address}"
        async with grpc.aio.insecure_channel(target, options=[
                ("grpc.service_config", json.dumps(SERVICE_CONFIG))]) as channel:
            stub = model_service_pb2_grpc.ModelServiceStub(channel)
            stopped = threading.Event()
            failures: list[str] = []
            calls = 0

            async def call_in_a_loop() -> None:
                nonlocal calls
                while not stopped.is_set():
                    try:
                        await stub.ListModels(model_service_pb2.ListModelsRequest(), timeout=5)
                        calls += 1
                    except grpc.aio.AioRpcError as err:
                        failures.append(f"{err.code().name}: {err.details()}")
                    await asyncio.sleep(0.005)

            loops = [asyncio.create_task(call_in_a_loop()) for _ in range(4)]
            await asyncio.sleep(1.0)
            before = calls
            started = time.monotonic()
            code = await asyncio.to_thread(a.terminate, 30)
            drained = time.monotonic() - started
            await asyncio.sleep(1.0)  # and with A gone
            stopped.set()
            await asyncio.gather(*loops)
        assert code == 0
        assert drained >= 2.0  # it kept serving through its drain delay
        assert calls > before > 0
        assert failures == []
    finally:
        a.kill()
        b.terminate()
