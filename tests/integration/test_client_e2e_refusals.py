"""A server refusing a client stream part-way (UploadFile, ImportRows, StreamAddRequests)
reaches the caller as the server's own status and details, through the blocking and the
asyncio client alike. ``grpc.aio`` alone reports such a refusal as INTERNAL "Internal error
from Core" (grpc/grpc#36066); each refusal here comes while the client is still writing
(issue 11.2)."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

import rowforge.clients.types as t
from rowforge.clients import AsyncRowForge, RowForge
from rowforge.clients import exceptions as ex
from rowforge.clients.batch_jobs import BatchRequest
from tests.support.server import ServerProcess

IMAGE_LIMIT = 64 * 1024
PNG = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR" + b"\0" * 100


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("refusals"),
                         env={"ROWFORGE_MAX_IMAGE_BYTES": str(IMAGE_LIMIT)})
    with proc.start():
        yield proc


Call = Callable[[Any], Any]


@pytest.fixture(params=["sync", "async"])
def run(request: pytest.FixtureRequest, limited: ServerProcess
        ) -> Callable[[Call], Awaitable[Any]]:
    """``await run(lambda client: client.file.upload_file(...))`` with either client."""

    async def sync(call: Call) -> Any:
        with RowForge(address=limited.address) as client:
            return call(client)

    async def asyncio_(call: Call) -> Any:
        async with AsyncRowForge(address=limited.address) as client:
            return await call(client)

    return sync if request.param == "sync" else asyncio_


async def test_an_upload_over_the_size_limit(run) -> None:  # type: ignore[no-untyped-def]
    # a file object: no size is declared, the server counts and refuses once past the limit
    big = io.BytesIO(PNG + b"\0" * (16 * 1024 * 1024))
    with pytest.raises(ex.InvalidArgumentError) as err:
        await run(lambda c: c.file.upload_file(big, name="big.png"))
    assert err.value.reason == "FILE_TOO_LARGE", err.value
    assert err.value.field_violations


async def test_an_upload_whose_content_is_not_its_type(run) -> None:  # type: ignore[no-untyped-def]
    exe = b"MZ\x90\0" + b"\0" * (16 * 1024 * 1024)
    with pytest.raises(ex.InvalidArgumentError) as err:
        await run(lambda c: c.file.upload_file(exe, name="photo.png"))
    assert err.value.reason == "FILE_TYPE_MISMATCH", err.value
    assert "image/png" in err.value.message


async def test_an_import_over_the_row_limit(run, request: pytest.FixtureRequest  # type: ignore[no-untyped-def]
                                            ) -> None:
    table = f"imports_{request.node.callspec.id}"
    with RowForge(address=request.getfixturevalue("limited").address) as client:
        client.table.create_action_table(t.ActionTableSchemaCreate(
            id=table, cols=[t.ColumnSchemaCreate(id="x")]))
    rows = b"x\n" + b"1234567\n" * (2_000_000)  # 131k rows a chunk: over 100k after the first
    with pytest.raises(ex.InvalidArgumentError) as err:
        await run(lambda c: c.table.import_rows("action", table, rows, generate=False))
    assert err.value.reason == "IMPORT_TOO_LARGE", err.value
    with RowForge(address=request.getfixturevalue("limited").address) as client:
        assert client.table.list_table_rows("action", table).total == 0  # all or nothing


async def test_a_bad_request_in_a_later_message_of_the_stream(run, limited: ServerProcess  # type: ignore[no-untyped-def]
                                                              ) -> None:
    with RowForge(address=limited.address) as client:
        job = client.batch.create_job("rowforge/chat", job_type="refusals")
    text = "y" * 2000

    def requests() -> Iterator[BatchRequest]:
        for i in range(5000):
            rid = "bad id!" if i == 250 else f"r{i}"  # in the third message of 100
            yield BatchRequest(request_id=rid, content_parts=[{"type": "text", "text": text}])

    with pytest.raises(ex.InvalidArgumentError) as err:
        await run(lambda c: c.batch.add_many(job.job_id, requests()))
    assert err.value.field_violations, err.value
    assert err.value.metadata.get("message") == "2", err.value.metadata
    with RowForge(address=limited.address) as client:
        assert client.batch.get_job(job.job_id).metrics.total_requests == 0  # all or nothing


class _Endless(io.RawIOBase):
    """A file object that never ends, a chunk every 20 ms."""

    name = "endless.txt"

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        time.sleep(0.02)
        return b"a" * min(size if size > 0 else 65536, 65536)


async def test_cancelling_an_async_upload_cancels_the_call(limited: ServerProcess) -> None:
    tmp = limited.data_dir / "files" / "tmp"
    async with AsyncRowForge(address=limited.address) as client:
        upload = asyncio.create_task(client.file.upload_file(_Endless()))
        await asyncio.sleep(1.0)
        assert not upload.done()
        upload.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(upload, 10)
    async with asyncio.timeout(30):  # the server drops the partial upload
        while tmp.exists() and any(tmp.iterdir()):  # noqa: ASYNC110 - polling a directory
            await asyncio.sleep(0.05)
