"""The same server on PostgreSQL: schema creation, projects/tokens, auth, shutdown."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from rowforge.v1 import model_service_pb2 as mpb
from rowforge.v1 import model_service_pb2_grpc as mgrpc
from tests.support import postgres
from tests.support.server import ServerProcess


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    if postgres.postgres_url() is None:
        pytest.skip(postgres.SKIP_REASON)
    url = postgres.create_database()
    try:
        yield url
    finally:
        postgres.drop_database(url)


def admin(url: str, data_dir: Path, *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "rowforge.server", "admin", "--database-url", url,
                          "--data-dir", str(data_dir), *args],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


async def test_server_on_postgresql(pg_url: str, tmp_path: Path) -> None:
    project = admin(pg_url, tmp_path, "create-project", "PG", "--id", "pg")
    token = admin(pg_url, tmp_path, "create-token", "--project", project)
    env = {"ROWFORGE_DATABASE_URL": pg_url, "ROWFORGE_AUTH": "true"}
    # Two replicas start on the same database at once: schema creation must not race.
    a, b = ServerProcess(tmp_path / "a", env=env), ServerProcess(tmp_path / "b", env=env)
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(ServerProcess.start, (a, b)))
    with a, b:
        for proc in (a, b):
            async with grpc.aio.insecure_channel(proc.address) as ch:
                health = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest())
                assert health.status == health_pb2.HealthCheckResponse.SERVING
                reply = await mgrpc.ModelServiceStub(ch).ListModels(
                    mpb.ListModelsRequest(), metadata=(("authorization", f"Bearer {token}"),
                                                       ("x-project-id", "pg")))
                assert reply.items
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await mgrpc.ModelServiceStub(ch).ListModels(mpb.ListModelsRequest())
                assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert a.terminate() == 0 and b.terminate() == 0
    # No SQLite file was created: everything lives in PostgreSQL.
    assert not (tmp_path / "a" / "rowforge.db").exists()
