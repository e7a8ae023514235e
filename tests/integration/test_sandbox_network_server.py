"""Python cells of a real server cannot reach the server, its database or the host's network.

One server per network mode (``ROWFORGE_SANDBOX_NETWORK``); a Python column tries the
red-team attacks and reports what happened; every attack must have failed.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import grpc
import pytest

from rowforge.v1 import table_service_pb2_grpc
from tests.conftest import assert_no_unhandled_errors, server_env
from tests.integration.generation_support import (
    DONE,
    add_rows,
    create_table,
    input_col,
    python_col,
)
from tests.support import postgres
from tests.support.server import ServerProcess

PG_URL = postgres.postgres_url()  # probed now: it runs its own event loop

ATTACKS = r"""
import asyncio, json, socket
import grpc

out = {}
port = int(row["port"])
def attempt(name, fn):
    try:
        out[name] = ["succeeded", repr(fn())]
    except BaseException as exc:
        out[name] = ["failed", f"{type(exc).__name__}: {exc}"]

def raw(host, p):
    with socket.create_connection((host, p), timeout=3):
        return "connected"
attempt("server port", lambda: raw("127.0.0.1", port))
attempt("server port by name", lambda: raw("localhost", port))
attempt("metadata", lambda: raw("169.254.169.254", 80))
attempt("private", lambda: raw("10.1.2.3", 80))

def call_server():  # ListTables as project alpha; an empty request is valid protobuf
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary("/rowforge.v1.TableService/ListTables")
        return call(b"", metadata=(("x-project-id", "alpha"),), timeout=5)
attempt("grpc as another project", call_server)

def fetch(url):
    import httpx
    response = httpx.get(url, timeout=5)
    if response.status_code >= 400:
        raise RuntimeError(f"{response.status_code} {response.text.strip()}")
    return response.status_code
attempt("http to the server port", lambda: fetch(f"http://127.0.0.1:{port}/"))
attempt("http to localhost", lambda: fetch(f"http://localhost:{port}/"))
attempt("http to metadata", lambda: fetch("http://169.254.169.254/latest/meta-data/"))

def listen():
    s = socket.socket()
    s.bind(("0.0.0.0", 0))
    s.listen()
    return s.getsockname()
attempt("listen", listen)

if row["dsn"]:
    async def forge():
        import asyncpg
        conn = await asyncpg.connect(row["dsn"], timeout=5)
        await conn.execute(f"INSERT INTO {row['table']} VALUES ('forged')")
        return "inserted"
    attempt("database token forging", lambda: asyncio.run(forge()))
row["report"] = json.dumps(out)
"""


@pytest.fixture(scope="module", params=["off", "public"])
def net_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
               fake_openai: object) -> Iterator[tuple[str, ServerProcess]]:
    mode = request.param
    env = server_env(fake_openai, ROWFORGE_SANDBOX_NETWORK=mode, ROWFORGE_SANDBOX_TIMEOUT_S="40",
                     ROWFORGE_SANDBOX_WORKERS="1")
    proc = ServerProcess(tmp_path_factory.mktemp(f"net-{mode}"), env=env)
    with proc.start():
        yield mode, proc
    assert_no_unhandled_errors(proc)


async def test_cells_cannot_reach_the_server_the_database_or_private_networks(
        net_server: tuple[str, ServerProcess]) -> None:
    mode, server = net_server
    dsn = table = ""
    conn = None
    if PG_URL is not None:
        import asyncpg

        dsn = PG_URL.replace("postgresql+asyncpg://", "postgresql://")
        table = f"forged_{uuid.uuid4().hex[:8]}"
        conn = await asyncpg.connect(dsn)
        await conn.execute(f"CREATE TABLE {table} (token text)")
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = table_service_pb2_grpc.TableServiceStub(channel)
            md = (("x-project-id", f"net-{uuid.uuid4().hex[:8]}"),)
            await create_table(stub, md, "t", [input_col("port"), input_col("dsn"),
                                               input_col("table"),
                                               python_col("report", ATTACKS)])
            reply = await add_rows(stub, md, "t", [{"port": str(server.port), "dsn": dsn,
                                                    "table": table}])
        cell = reply.rows[0].columns["report"]
        assert cell.status == DONE, cell
        report = json.loads(cell.value.string_value or cell.text)
        assert len(report) >= 9, report
        for attack, (outcome, detail) in report.items():
            assert outcome == "failed", f"{mode}: {attack} {outcome}: {detail}"
        # Say why, not only that it failed.
        if mode == "off":
            assert "denied network access" not in report["server port"][1]  # a raw exception
            assert "Permission denied" in report["server port"][1], report
        else:
            assert "not a public address" in report["http to localhost"][1], report
            assert "not a public address" in report["http to metadata"][1], report
        assert "Permission denied" in report["listen"][1], report
        if conn is not None:
            assert await conn.fetch(f"SELECT * FROM {table}") == []
    finally:
        if conn is not None:
            await conn.execute(f"DROP TABLE IF EXISTS {table}")
            await conn.close()
