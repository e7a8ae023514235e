"""What a type checker sees of the Python client: ``make lint`` runs ``mypy --strict`` on this
file (``scripts/typecheck.py``), and every ``assert_type`` below fails it when a method's type
drifts. It is never run: the calls need no server.
"""

from __future__ import annotations

from typing import Any, Literal, assert_type

import rowforge.clients.types as t
from rowforge.clients import AsyncRowForge, RowForge
from rowforge.clients._transport import AsyncStream, SyncStream
from rowforge.clients.batch_jobs import BatchResult, Job, JobEvent

ROWS = [{"input": "hi"}]
CHAT = [t.ChatEntry.user("hi")]


def sync_client(client: RowForge, streams: bool) -> None:
    # A request's `stream` decides the result's type; it defaults to True, as in the JamAI SDK.
    assert_type(client.table.add_table_rows(
        "action", t.MultiRowAddRequest(table_id="a", data=ROWS, stream=False)),
        t.MultiRowCompletionResponse)
    assert_type(client.table.add_table_rows(
        "action", t.MultiRowAddRequest(table_id="a", data=ROWS, stream=True)),
        SyncStream[t.RowStreamChunk])
    assert_type(client.table.add_table_rows(
        "action", t.MultiRowAddRequest(table_id="a", data=ROWS)), SyncStream[t.RowStreamChunk])
    # Only known at run time: either, and the caller narrows.
    assert_type(client.table.add_table_rows(
        "action", t.MultiRowAddRequest(table_id="a", data=ROWS, stream=streams)),
        t.MultiRowCompletionResponse | SyncStream[t.RowStreamChunk])
    assert_type(client.table.regen_table_rows(
        "action", t.MultiRowRegenRequest(table_id="a", row_ids=["r"], stream=False)),
        t.MultiRowCompletionResponse)
    assert_type(client.table.regen_table_rows(
        "action", t.RowRegenRequest(table_id="a", row_id="r")), SyncStream[t.RowStreamChunk])
    assert_type(client.generate_chat_completions(t.ChatRequest(messages=CHAT, stream=False)),
                t.ChatCompletionResponse)
    assert_type(client.generate_chat_completions(t.ChatRequest(messages=CHAT)),
                SyncStream[t.ChatCompletionChunk])
    assert_type(client.table.list_tables("action"), t.Page[t.TableMetaResponse])
    assert_type(client.table.list_table_rows("action", "a"), t.Page[dict[str, Any]])
    assert_type(client.file.get_thumbnail("file://x"), bytes)
    assert_type(client.batch.get_job("j"), Job)
    assert_type(client.table.backfill_column("action", "a", "c").wait(), Job)
    assert_type(client.with_options(timeout=None), RowForge)


async def async_client(client: AsyncRowForge) -> None:
    # Whole results are awaited; streams are async iterators (awaiting them first also works).
    assert_type(await client.table.add_table_rows(
        "action", t.MultiRowAddRequest(table_id="a", data=ROWS, stream=False)),
        t.MultiRowCompletionResponse)
    stream = client.table.add_table_rows("action", t.MultiRowAddRequest(table_id="a", data=ROWS))
    assert_type(stream, AsyncStream[t.RowStreamChunk])
    assert_type(await stream, AsyncStream[t.RowStreamChunk])
    async for chunk in stream:
        assert_type(chunk, t.RowStreamChunk)
    assert_type(await client.generate_chat_completions(
        t.ChatRequest(messages=CHAT, stream=False)), t.ChatCompletionResponse)
    async for delta in client.generate_chat_completions(t.ChatRequest(messages=CHAT)):
        assert_type(delta, t.ChatCompletionChunk)
    assert_type(await client.table.list_tables("action"), t.Page[t.TableMetaResponse])
    assert_type(client.table.iter_tables("action"), AsyncStream[t.TableMetaResponse])
    assert_type(await client.table.get_table_row("action", "a", "r"), dict[str, Any])
    assert_type(await client.file.upload_file(b"x", name="x.txt"), t.FileInfo)
    assert_type(await client.batch.create_job("m"), Job)
    assert_type(client.batch.stream_results("j"), AsyncStream[BatchResult])
    assert_type(client.batch.watch_job("j"), AsyncStream[JobEvent])
    assert_type(await client.model_ids(), list[str])
    # A table job's handle: its methods are awaited too, its events an async stream.
    job = await client.table.backfill_column("action", "a", "c")
    assert_type(await job.wait(), Job)
    assert_type(await job.refresh(), Job)
    assert_type(await job.cancel(), Job)
    assert_type(job.watch(), AsyncStream[JobEvent])
    assert_type(job.job_id, str)
    assert_type(client.with_options(timeout=5), AsyncRowForge)
    request: t.MultiRowAddRequest[Literal[False]] = t.MultiRowAddRequest(
        table_id="a", data=ROWS, stream=False)
    assert_type(await client.table.add_table_rows("action", request),
                t.MultiRowCompletionResponse)
