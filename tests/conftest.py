"""Shared fixtures: real servers on loopback ports, the fake OpenAI server, PostgreSQL."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest

from tests.support import postgres
from tests.support.server import ServerProcess

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

FAKE_KEY_ENV = "ROWFORGE_TEST_FAKE_OPENAI_KEY"


def pytest_report_header(config: pytest.Config) -> str:
    url = postgres.postgres_url()
    return f"PostgreSQL: {url}" if url else f"PostgreSQL: NOT REACHABLE, {postgres.SKIP_REASON}"


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # type: ignore[no-untyped-def]
    if postgres.postgres_url() is None:
        terminalreporter.write_line(postgres.SKIP_REASON, yellow=True, bold=True)


@pytest.fixture(scope="session")
def fake_openai() -> Iterator[object]:
    """The fake OpenAI-compatible server, in a background thread for the whole session."""
    server_python = os.environ.get("ROWFORGE_TEST_SERVER_PYTHON")
    if server_python:  # .venv-min: no server extra here; the fake runs beside the server
        yield from _fake_openai_process(server_python)
        return
    from tests.fakes.openai_server import FakeOpenAI

    fake = FakeOpenAI.start_in_thread()
    try:
        yield fake
    finally:
        fake.stop()


def _fake_openai_process(python: str) -> Iterator[object]:
    """The fake in a subprocess of ``python`` (only ``base_url``: it cannot be programmed)."""
    import subprocess
    import types

    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen([python, "-m", "tests.fakes.openai_server"], cwd=root,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        yield types.SimpleNamespace(base_url=proc.stdout.readline().strip())
    finally:
        proc.kill()
        proc.wait(10)


def fake_models(fake: object) -> list[dict[str, object]]:
    """Model entries routing to the fake server through litellm."""
    base = fake.base_url  # type: ignore[attr-defined]
    return [
        {"id": "fake/gpt", "route": "openai/fake-gpt", "api_base": base, "api_key_env": FAKE_KEY_ENV,
         "capabilities": ["chat", "image", "audio"], "context_length": 8192},
        {"id": "fake/unknown", "route": "openai/unknown-model", "api_base": base,
         "api_key_env": FAKE_KEY_ENV, "capabilities": ["chat"], "context_length": 8192},
        {"id": "fake/embed", "route": "openai/fake-embed", "api_base": base,
         "api_key_env": FAKE_KEY_ENV, "capabilities": ["embed"], "embedding_size": 64},
    ]


def server_env(fake: object, **extra: str) -> dict[str, str]:
    env = {"ROWFORGE_MODELS": json.dumps(fake_models(fake)), FAKE_KEY_ENV: "sk-fake"}
    env.update(extra)
    return env


def _fresh_postgres() -> Iterator[str]:
    if postgres.postgres_url() is None:
        pytest.skip(postgres.SKIP_REASON)
    url = postgres.create_database()
    try:
        yield url
    finally:
        postgres.drop_database(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database of each kind (PostgreSQL skipped, clearly, when not reachable)."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"
        return
    yield from _fresh_postgres()


@pytest.fixture
def shared_database() -> Iterator[str]:
    """A fresh PostgreSQL database for several server processes (replicas) to share; skipped,
    clearly, when PostgreSQL is not reachable."""
    yield from _fresh_postgres()


def replica_server(tmp_path: Path, name: str, fake: object, database: str, *, port: int = 0,
                   **env: str) -> ServerProcess:
    """A started server on ``database`` (shared with other replicas) whose worker id is
    ``name``, with 8 batch workers and the fake's models; ``env`` adds settings, ``port``
    picks the port (0: a free one)."""
    return ServerProcess(tmp_path / name, env=server_env(
        fake, ROWFORGE_DATABASE_URL=database, ROWFORGE_BATCH_WORKERS="8",
        ROWFORGE_WORKER_ID=name, **env), port=port).start()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, fake_openai: object) -> Iterator[ServerProcess]:
    """One real server (SQLite, auth off) shared by a test module."""
    proc = ServerProcess(tmp_path_factory.mktemp("server"), env=server_env(fake_openai))
    with proc.start():
        yield proc
    assert_no_unhandled_errors(proc)


def assert_no_unhandled_errors(proc: ServerProcess) -> None:
    """A bug in a handler is logged as "unhandled error"; no test may cause one."""
    bugs = [e for e in proc.logs() if str(e.get("msg", "")).startswith("unhandled error")]
    assert not bugs, "the server logged unhandled errors:\n" + "\n".join(
        f"{e['msg']}\n{e.get('exc', '')}" for e in bugs)


@pytest.fixture
async def channel(server: ServerProcess) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(server.address) as ch:
        yield ch
