"""The seed's environment names reach a real server: ``JAMAI_API_BASE`` picks the server,
``JAMAI_TIMEOUT_SEC`` and ``JAMAI_FILE_UPLOAD_TIMEOUT_SEC`` set the deadlines (issue 11.8)."""

from __future__ import annotations

import pytest

from rowforge.clients import AsyncRowForge, RowForge
from rowforge.clients import exceptions as ex
from tests.support.server import ServerProcess

SEED_AND_OURS = ("ROWFORGE_ADDRESS", "ROWFORGE_TIMEOUT_SEC", "ROWFORGE_FILE_UPLOAD_TIMEOUT_SEC",
                 "JAMAI_API_BASE", "JAMAI_TIMEOUT_SEC", "JAMAI_FILE_UPLOAD_TIMEOUT_SEC")


@pytest.fixture
def seed_env(server: ServerProcess, monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in SEED_AND_OURS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("JAMAI_API_BASE", f"http://{server.address}/api")
    return monkeypatch


def test_api_base_and_timeouts_from_the_seed_names(seed_env: pytest.MonkeyPatch) -> None:
    seed_env.setenv("JAMAI_TIMEOUT_SEC", "0.0001")
    seed_env.setenv("JAMAI_FILE_UPLOAD_TIMEOUT_SEC", "60")
    with RowForge() as client:
        with pytest.raises(ex.DeadlineExceededError):
            client.model_ids()
        info = client.file.upload_file(b"hello", name="hello.txt")  # the upload deadline
        assert info.uri
    seed_env.setenv("JAMAI_TIMEOUT_SEC", "60")
    seed_env.setenv("JAMAI_FILE_UPLOAD_TIMEOUT_SEC", "0.0001")
    with RowForge() as client:
        assert "rowforge/chat" in client.model_ids()  # found the server by JAMAI_API_BASE
        with pytest.raises(ex.DeadlineExceededError):
            client.file.upload_file(b"x" * 3_000_000, name="big.txt")


async def test_the_async_client_reads_them_too(seed_env: pytest.MonkeyPatch) -> None:
    seed_env.setenv("JAMAI_TIMEOUT_SEC", "0.0001")
    async with AsyncRowForge() as client:
        with pytest.raises(ex.DeadlineExceededError):
            await client.model_ids()
    seed_env.setenv("JAMAI_TIMEOUT_SEC", "60")
    async with AsyncRowForge() as client:
        assert "rowforge/chat" in await client.model_ids()
