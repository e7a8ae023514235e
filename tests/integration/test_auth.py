"""Projects, tokens and the auth interceptor over a real server with auth on."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from rowforge.v1 import model_service_pb2 as mpb
from rowforge.v1 import model_service_pb2_grpc as mgrpc
from tests.support.server import ServerProcess


def admin(data_dir: Path, *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "rowforge.server", "admin", "--data-dir",
                          str(data_dir), *args], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, dict]]:
    data = tmp_path_factory.mktemp("auth")
    p1 = admin(data, "create-project", "Alpha", "--id", "alpha")
    p2 = admin(data, "create-project", "Beta", "--id", "beta")
    tokens = {p1: admin(data, "create-token", "--project", p1),
              p2: admin(data, "create-token", "--project", p2)}
    with ServerProcess(data, env={"ROWFORGE_AUTH": "true"}).start() as proc:
        yield proc, tokens


def reason(err: grpc.aio.AioRpcError) -> str:
    status = rpc_status.from_call(err)
    assert status is not None, "every error carries google.rpc.Status details"
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason
    raise AssertionError("no ErrorInfo")


async def call(address: str, metadata: tuple[tuple[str, str], ...]) -> mpb.ListModelsResponse:
    async with grpc.aio.insecure_channel(address) as ch:
        return await mgrpc.ModelServiceStub(ch).ListModels(mpb.ListModelsRequest(),
                                                           metadata=metadata, timeout=10)


def test_tokens_are_stored_hashed(secured) -> None:  # type: ignore[no-untyped-def]
    proc, tokens = secured
    raw = (proc.data_dir / "rowforge.db").read_bytes()
    for token in tokens.values():
        assert token.encode() not in raw


async def test_valid_token_and_project(secured) -> None:  # type: ignore[no-untyped-def]
    proc, tokens = secured
    reply = await call(proc.address, (("authorization", f"Bearer {tokens['alpha']}"),
                                      ("x-project-id", "alpha")))
    assert reply.items
    # The project may be omitted: the token's own project is used.
    assert (await call(proc.address, (("authorization", f"Bearer {tokens['beta']}"),))).items


@pytest.mark.parametrize(("metadata", "code", "why"), [
    ((), grpc.StatusCode.UNAUTHENTICATED, "MISSING_TOKEN"),
    ((("authorization", "Basic abc"),), grpc.StatusCode.UNAUTHENTICATED, "MALFORMED_TOKEN"),
    ((("authorization", "Bearer"),), grpc.StatusCode.UNAUTHENTICATED, "MALFORMED_TOKEN"),
    ((("authorization", "Bearer rf_nope_nope"),), grpc.StatusCode.UNAUTHENTICATED,
     "INVALID_TOKEN"),
])
async def test_bad_credentials(secured, metadata, code, why) -> None:  # type: ignore[no-untyped-def]
    proc, _ = secured
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call(proc.address, metadata)
    assert err.value.code() == code
    assert reason(err.value) == why
    assert "token" in err.value.details().lower()


async def test_token_of_another_project_is_denied(secured) -> None:  # type: ignore[no-untyped-def]
    proc, tokens = secured
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call(proc.address, (("authorization", f"Bearer {tokens['alpha']}"),
                                  ("x-project-id", "beta")))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "beta" in err.value.details()


async def test_health_needs_no_token(secured) -> None:  # type: ignore[no-untyped-def]
    proc, _ = secured
    async with grpc.aio.insecure_channel(proc.address) as ch:
        reply = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest())
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_admin_errors_are_clear(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "rowforge.server", "admin", "--data-dir",
                          str(tmp_path), "create-token", "--project", "missing"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "project 'missing' not found" in out.stderr
    out = subprocess.run([sys.executable, "-m", "rowforge.server", "admin", "--data-dir",
                          str(tmp_path), "create-project", "X", "--id", "bad id!"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "project_id" in out.stderr


def test_undecodable_requests_are_refused_after_authentication(secured) -> None:  # type: ignore[no-untyped-def]
    proc, tokens = secured
    with grpc.insecure_channel(proc.address) as ch:
        list_tables = ch.unary_unary("/rowforge.v1.TableService/ListTables")
        with pytest.raises(grpc.RpcError) as anonymous:
            list_tables(b"\xff\xff", timeout=10)
        assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as known:
            list_tables(b"\xff\xff", metadata=(("authorization", f"Bearer {tokens['alpha']}"),),
                        timeout=10)
        assert known.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "could not be decoded" in known.value.details()
