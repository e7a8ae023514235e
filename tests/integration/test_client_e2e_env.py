"""The seed's environment names reach a real server: ``JAMAI_API_BASE`` picks the server,
``JAMAI_TIMEOUT_SEC`` and ``JAMAI_FILE_UPLOAD_TIMEOUT_SEC`` set the deadlines (issue 11.8).

The deadlines are shown with a call the fake provider holds for 3 s (a 1 s deadline fails it,
a 60 s one does not) and an upload of 20 MB against a 1 ms upload deadline."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import rowforge.clients.types as t
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


@pytest.fixture
def slow_provider(fake_openai: object) -> Iterator[None]:
    fake_openai.latency = 3.0  # type: ignore[attr-defined]
    try:
        yield
    finally:
        fake_openai.latency = 0.0  # type: ignore[attr-defined]


def slow_call() -> t.ChatRequest:
    return t.ChatRequest(model="fake/gpt", messages=[t.ChatEntry.user("slow")], stream=False)


def test_api_base_and_timeouts_from_the_seed_names(seed_env: pytest.MonkeyPatch,
                                                   slow_provider: None) -> None:
    seed_env.setenv("JAMAI_TIMEOUT_SEC", "1")
    seed_env.setenv("JAMAI_FILE_UPLOAD_TIMEOUT_SEC", "60")
    with RowForge() as client:
        assert "rowforge/chat" in client.model_ids()  # found the server by JAMAI_API_BASE
        with pytest.raises(ex.DeadlineExceededError):
            client.generate_chat_completions(slow_call())
        assert client.file.upload_file(b"hello", name="hello.txt").uri  # the upload deadline
    seed_env.setenv("JAMAI_TIMEOUT_SEC", "60")
    seed_env.setenv("JAMAI_FILE_UPLOAD_TIMEOUT_SEC", "0.001")
    with RowForge() as client:
        assert client.generate_chat_completions(slow_call()).text
        with pytest.raises(ex.DeadlineExceededError):
            client.file.upload_file(b"x" * 20_000_000, name="big.txt")


async def test_the_async_client_reads_them_too(seed_env: pytest.MonkeyPatch,
                                               slow_provider: None) -> None:
    seed_env.setenv("JAMAI_TIMEOUT_SEC", "1")
    async with AsyncRowForge() as client:
        assert "rowforge/chat" in await client.model_ids()
        with pytest.raises(ex.DeadlineExceededError):
            await client.generate_chat_completions(slow_call())
    seed_env.setenv("JAMAI_TIMEOUT_SEC", "60")
    async with AsyncRowForge() as client:
        assert (await client.generate_chat_completions(slow_call())).text
