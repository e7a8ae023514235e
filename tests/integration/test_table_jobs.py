"""Table jobs (CreateTableJob + BatchJobService) against a real server and the fake OpenAI
server over HTTP: cells written once in DAG order, counted against the provider's request
log; failures, cancel, 429 storms, edits and deletes mid-job, SIGKILL and resume."""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from rowforge.v1 import batch_job_service_pb2 as bpb
from rowforge.v1 import batch_job_service_pb2_grpc, table_service_pb2_grpc
from rowforge.v1 import table_service_pb2 as pb
from tests.conftest import server_env
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.generation_support import (
    ACTION,
    DONE,
    ERROR,
    input_col,
    llm_col,
    struct,
)
from tests.integration.test_batch_support import prompts_of
from tests.support.server import ServerProcess

Metadata = tuple[tuple[str, str], ...]
WORKERS = 16


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI.start_in_thread(latency=0.02)
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, fake: FakeOpenAI
           ) -> Iterator[ServerProcess]:
    env = server_env(fake, ROWFORGE_BATCH_WORKERS=str(WORKERS), ROWFORGE_BATCH_LEASE_S="5",
                     ROWFORGE_BATCH_BACKOFF_BASE_S="0.05", ROWFORGE_BATCH_BACKOFF_MAX_S="0.5",
                     ROWFORGE_BATCH_MAX_ATTEMPTS="8")
    with ServerProcess(tmp_path_factory.mktemp("tj"), env=env).start() as proc:
        yield proc


@pytest.fixture
async def channel(server: ServerProcess) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(server.address) as ch:
        yield ch


@pytest.fixture
def md() -> Metadata:
    return (("x-project-id", f"tj-{uuid.uuid4().hex[:12]}"),)


class Stubs:
    def __init__(self, channel: grpc.aio.Channel, md: Metadata) -> None:
        self.t = table_service_pb2_grpc.TableServiceStub(channel)
        self.b = batch_job_service_pb2_grpc.BatchJobServiceStub(channel)
        self.md = md

    async def table(self, table_id: str, n: int, *, cols: list[pb.Column] | None = None,
                    tag: str = "") -> list[str]:
        """A table with input q and ``n`` rows (no generation), then the ``cols`` added."""
        await self.t.CreateTable(pb.CreateTableRequest(
            table_type=ACTION, table_id=table_id, cols=[input_col("q")]), metadata=self.md)
        ids: list[str] = []
        for start in range(0, n, 100):
            reply = await self.t.AddRows(pb.AddRowsRequest(
                table_type=ACTION, table_id=table_id,
                data=[struct({"q": f"{tag}q{i}"}) for i in range(start, min(n, start + 100))]),
                metadata=self.md)
            ids += [r.row_id for r in reply.rows]
        if cols:
            await self.t.AddColumns(pb.AddColumnsRequest(
                table_type=ACTION, table_id=table_id, cols=cols), metadata=self.md)
        return ids

    async def job(self, table_id: str, **kw: Any) -> bpb.Job:
        kw.setdefault("regen_strategy", pb.REGEN_STRATEGY_RUN_ALL)
        reply = await self.t.CreateTableJob(pb.CreateTableJobRequest(
            table_type=ACTION, table_id=table_id, **kw), metadata=self.md)
        return reply.job

    async def watch(self, job_id: str) -> tuple[bpb.Job, list[bpb.WatchJobResponse]]:
        events = [e async for e in self.b.WatchJob(bpb.WatchJobRequest(job_id=job_id),
                                                   metadata=self.md, timeout=120)]
        job = (await self.b.GetJob(bpb.GetJobRequest(job_id=job_id), metadata=self.md)).job
        return job, events

    async def rows(self, table_id: str) -> dict[str, pb.Row]:
        out: dict[str, pb.Row] = {}
        token = ""
        while True:
            reply = await self.t.ListRows(pb.ListRowsRequest(
                table_type=ACTION, table_id=table_id, limit=100, page_token=token),
                metadata=self.md)
            out.update((r.id, r) for r in reply.items)
            token = reply.next_page_token
            if not token:
                return out


def two_cols() -> list[pb.Column]:
    return [llm_col("a", "answer ${q}", model="fake/gpt"),
            llm_col("b", "more ${a}", model="fake/gpt")]


def chat_prompts(fake: FakeOpenAI, tag: str) -> Counter[str]:
    return Counter(t for t, _ in prompts_of(fake) if tag in t)


async def test_backfill_all_rows_writes_every_cell_once_in_dag_order(
        channel: grpc.aio.Channel, md: Metadata, fake: FakeOpenAI) -> None:
    s = Stubs(channel, md)
    tag = uuid.uuid4().hex[:6]
    n = 300
    ids = await s.table("t", n, cols=two_cols(), tag=tag)
    job = await s.job("t", all_rows=True, idempotency_key="k1")
    assert job.job_type == "rowforge.table/action/t"
    again = await s.job("t", all_rows=True, idempotency_key="k1")
    assert again.job_id == job.job_id  # idempotent
    final, events = await s.watch(job.job_id)
    assert final.state == bpb.JOB_STATE_SUCCEEDED
    assert final.metrics.successful_requests == n and final.metrics.total_requests == n
    assert final.metrics.output_tokens > 0
    done = [e for e in events if e.event_type == bpb.JOB_EVENT_TYPE_REQUEST_SUCCEEDED]
    assert sorted(e.request_id for e in done) == sorted(ids)
    rows = await s.rows("t")
    assert all(rows[r].cells["a"].status == DONE and rows[r].cells["b"].status == DONE
               and rows[r].cells["b"].value.string_value for r in ids)
    prompts = chat_prompts(fake, tag)
    # each cell once: one "answer" prompt per row, one "more" prompt per row (b after a)
    answers = [p for p in prompts if p.startswith("answer ")]
    assert len(answers) == n and set(prompts.values()) == {1}
    assert sum(prompts.values()) == 2 * n
    # ListJobs filtered by table
    listed = await s.b.ListJobs(bpb.ListJobsRequest(job_type="rowforge.table/action/t"),
                                metadata=md)
    assert [j.job_id for j in listed.items] == [job.job_id]


async def test_where_ids_strategies_and_only_missing(
        channel: grpc.aio.Channel, md: Metadata, fake: FakeOpenAI) -> None:
    s = Stubs(channel, md)
    tag = uuid.uuid4().hex[:6]
    ids = await s.table("w", 20, cols=two_cols(), tag=tag)
    # where: only q = <tag>q3 and <tag>q4; RUN_SELECTED of a
    job = await s.job("w", where=f"q IN ('{tag}q3', '{tag}q4')",
                      regen_strategy=pb.REGEN_STRATEGY_RUN_SELECTED, output_column_id="a")
    final, _ = await s.watch(job.job_id)
    assert final.metrics.successful_requests == 2
    rows = await s.rows("w")
    filled = {r for r in ids if rows[r].cells["a"].value.string_value}
    assert filled == {ids[3], ids[4]}
    assert not any(rows[r].cells["b"].value.string_value for r in ids)  # b not selected
    # backfill b for rows whose b is empty, by ids (RUN_SELECTED b, only_missing)
    before = sum(chat_prompts(fake, tag).values())
    job = await s.job("w", row_ids=[ids[3], ids[4], ids[5]],
                      regen_strategy=pb.REGEN_STRATEGY_RUN_AFTER, output_column_id="b",
                      only_missing=True)
    final, _ = await s.watch(job.job_id)
    assert final.metrics.successful_requests == 3
    rows = await s.rows("w")
    assert rows[ids[3]].cells["b"].status == DONE and rows[ids[3]].cells["b"].value.string_value
    # row 5's a is empty but DONE (never generated): b is generated from it, as inline
    assert rows[ids[5]].cells["b"].status == DONE
    # one call per row; row 5's prompt ("more " + nothing) carries no tag
    assert sum(chat_prompts(fake, tag).values()) - before == 2
    # only_missing again: nothing left to do for rows 3 and 4 (no call made)
    before = sum(chat_prompts(fake, tag).values())
    job = await s.job("w", row_ids=[ids[3], ids[4]],
                      regen_strategy=pb.REGEN_STRATEGY_RUN_ALL, only_missing=True)
    final, _ = await s.watch(job.job_id)
    assert final.state == bpb.JOB_STATE_SUCCEEDED
    assert sum(chat_prompts(fake, tag).values()) == before


async def test_upstream_failure_fails_downstream_with_the_reason(
        channel: grpc.aio.Channel, md: Metadata, fake: FakeOpenAI) -> None:
    s = Stubs(channel, md)
    tag = uuid.uuid4().hex[:6]
    ids = await s.table("f", 6, cols=two_cols(), tag=tag)
    fake.add_rule(f"answer {tag}q2", 400, message="bad prompt")
    job = await s.job("f", all_rows=True)
    final, events = await s.watch(job.job_id)
    assert final.state == bpb.JOB_STATE_SUCCEEDED
    assert final.metrics.failed_requests == 1 and final.metrics.successful_requests == 5
    failed = [e for e in events if e.event_type == bpb.JOB_EVENT_TYPE_REQUEST_FAILED]
    assert [e.request_id for e in failed] == [ids[2]]
    assert failed[0].result.error.reason == "CELL_FAILED"
    rows = await s.rows("f")
    assert rows[ids[2]].cells["a"].status == ERROR
    assert rows[ids[2]].cells["b"].status == ERROR
    assert "upstream column 'a' failed" in rows[ids[2]].cells["b"].error
    assert not any(p.startswith("more ") and "q2" in p for p in chat_prompts(fake, tag))


async def test_bad_requests_get_proper_statuses(channel: grpc.aio.Channel,
                                                md: Metadata) -> None:
    s = Stubs(channel, md)
    await s.table("e", 2, cols=two_cols())
    cases: list[tuple[dict[str, Any], grpc.StatusCode]] = [
        ({}, grpc.StatusCode.INVALID_ARGUMENT),  # no selection
        ({"all_rows": True, "where": "q = 'x'"}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"where": "nope = 1"}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"all_rows": True, "regen_strategy": pb.REGEN_STRATEGY_UNSPECIFIED},
         grpc.StatusCode.INVALID_ARGUMENT),
        ({"all_rows": True, "regen_strategy": pb.REGEN_STRATEGY_RUN_SELECTED,
          "output_column_id": "q"}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"row_ids": ["no-such-row"]}, grpc.StatusCode.NOT_FOUND),
        ({"where": "q = 'none'"}, grpc.StatusCode.FAILED_PRECONDITION),
    ]
    for kw, code in cases:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await s.job("e", **kw)
        assert info.value.code() == code, (kw, info.value.details())
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await s.job("missing", all_rows=True)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    # the reserved job type cannot be used for a plain batch job
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await s.b.CreateJob(bpb.CreateJobRequest(model="fake/gpt",
                                                 job_type="rowforge.table/action/e"),
                            metadata=md)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_429_storm_slows_the_job_and_loses_nothing(
        channel: grpc.aio.Channel, md: Metadata, fake: FakeOpenAI) -> None:
    s = Stubs(channel, md)
    tag = uuid.uuid4().hex[:6]
    n = 120
    ids = await s.table("s", n, cols=two_cols(), tag=tag)
    fake.fail_next(150, 429, retry_after=0.1)
    job = await s.job("s", all_rows=True)
    final, _ = await s.watch(job.job_id)
    assert final.state == bpb.JOB_STATE_SUCCEEDED, final
    assert final.metrics.successful_requests == n
    rows = await s.rows("s")
    assert all(rows[r].cells["b"].status == DONE for r in ids)
    assert final.metrics.provider_calls >= 2 * n + 100  # the 429s were paid for and retried


async def test_cancel_midway_leaves_the_rest_untouched_and_reads_are_served(
        channel: grpc.aio.Channel, md: Metadata, fake: FakeOpenAI) -> None:
    s = Stubs(channel, md)
    tag = uuid.uuid4().hex[:6]
    n = 400
    ids = await s.table("c", n, cols=two_cols(), tag=tag)
    job = await s.job("c", all_rows=True)
    read_latencies = []
    while True:
        t0 = time.perf_counter()
        await s.t.GetTable(pb.GetTableRequest(table_type=ACTION, table_id="c"), metadata=md)
        await s.t.ListRows(pb.ListRowsRequest(table_type=ACTION, table_id="c", limit=5),
                           metadata=md)
        read_latencies.append(time.perf_counter() - t0)
        got = (await s.b.GetJob(bpb.GetJobRequest(job_id=job.job_id), metadata=md)).job
        if got.metrics.processed_requests >= n // 2:
            break
        await asyncio.sleep(0.05)
    cancelled = (await s.b.CancelJob(bpb.CancelJobRequest(job_id=job.job_id),
                                     metadata=md)).job
    assert cancelled.state == bpb.JOB_STATE_CANCELLED
    assert max(read_latencies) < 5.0  # interactive reads are served during the job
    await asyncio.sleep(0.5)
    final = (await s.b.GetJob(bpb.GetJobRequest(job_id=job.job_id), metadata=md)).job
    rows = await s.rows("c")
    written = {r for r in ids if rows[r].cells["a"].value.string_value}
    finished = final.metrics.successful_requests
    # rows recorded are written; rows in flight at the cancel may have their first cell
    # written (at most the worker's capacity); every other row is as it was (empty)
    assert finished <= len(written) <= finished + 2 * WORKERS
    assert len(written) < n * 0.8
    untouched = [r for r in ids if r not in written]
    assert all(rows[r].cells["a"].status == DONE and not rows[r].cells["a"].error
               for r in untouched)
    # nothing is generated after the cancel
    count = sum(chat_prompts(fake, tag).values())
    await asyncio.sleep(0.5)
    assert sum(chat_prompts(fake, tag).values()) == count


async def test_rows_deleted_or_edited_before_their_turn(
        channel: grpc.aio.Channel, md: Metadata, fake: FakeOpenAI) -> None:
    s = Stubs(channel, md)
    tag = uuid.uuid4().hex[:6]
    ids = await s.table("d", 6, cols=two_cols(), tag=tag)
    # A row deleted before the job is not selected; one deleted after the job listed it is
    # skipped (ROW_DELETED) unless the worker already generated it; an edit before its
    # turn is generated from the edited value.
    await s.t.DeleteRows(pb.DeleteRowsRequest(table_type=ACTION, table_id="d",
                                              row_ids=[ids[1]]), metadata=md)
    job = await s.job("d", all_rows=True)  # rows 0, 2..5
    await s.t.DeleteRows(pb.DeleteRowsRequest(table_type=ACTION, table_id="d",
                                              row_ids=[ids[5]]), metadata=md)
    await s.t.UpdateRows(pb.UpdateRowsRequest(
        table_type=ACTION, table_id="d", data={ids[4]: struct({"q": f"{tag}edited"})}),
        metadata=md)
    final, events = await s.watch(job.job_id)
    rows = await s.rows("d")
    assert ids[5] not in rows and ids[1] not in rows
    prompts = chat_prompts(fake, tag)
    # the edited row is generated from its new value (possibly twice: if the edit landed
    # while its cells were being generated, it is generated again from the new value)
    assert prompts[f"answer {tag}edited"] >= 1
    assert rows[ids[4]].cells["b"].status == DONE
    by_row = {e.request_id: e for e in events if e.request_id}
    if ids[5] in by_row and by_row[ids[5]].event_type == bpb.JOB_EVENT_TYPE_REQUEST_FAILED:
        assert by_row[ids[5]].result.error.reason == "ROW_DELETED"
    assert final.metrics.processed_requests == 5


async def test_row_edited_while_generated_is_generated_again(
        channel: grpc.aio.Channel, md: Metadata, fake: FakeOpenAI) -> None:
    s = Stubs(channel, md)
    tag = uuid.uuid4().hex[:6]
    ids = await s.table("x", 1, cols=[llm_col("a", "answer ${q}", model="fake/gpt")],
                        tag=tag)
    # the first call of this row waits ~1 s (a 503 with Retry-After is retried by the job)
    fake.add_rule(f"answer {tag}q0", 503, times=1, retry_after=1.0)
    job = await s.job("x", all_rows=True)
    await asyncio.sleep(0.3)
    await s.t.UpdateRows(pb.UpdateRowsRequest(
        table_type=ACTION, table_id="x", data={ids[0]: struct({"q": f"{tag}new"})}),
        metadata=md)
    final, events = await s.watch(job.job_id)
    assert final.state == bpb.JOB_STATE_SUCCEEDED
    prompts = chat_prompts(fake, tag)
    # the row read its old value, was edited mid-generation, and was generated again
    assert prompts[f"answer {tag}new"] == 1
    done = [e for e in events if e.event_type == bpb.JOB_EVENT_TYPE_REQUEST_SUCCEEDED]
    assert '"regenerated": true' in done[0].result.response_text


async def test_sigkill_at_30_percent_then_restart_resumes_without_regenerating(
        tmp_path: Path) -> None:
    fake = FakeOpenAI.start_in_thread(latency=0.03)
    env = server_env(fake, ROWFORGE_BATCH_WORKERS="8", ROWFORGE_BATCH_LEASE_S="2")
    md: Metadata = (("x-project-id", "killed"),)
    n = 400
    tag = uuid.uuid4().hex[:6]
    first = ServerProcess(tmp_path, env=env).start()
    try:
        async with grpc.aio.insecure_channel(first.address) as ch:
            s = Stubs(ch, md)
            ids = await s.table("k", n, cols=two_cols(), tag=tag)
            job = await s.job("k", all_rows=True)
            while True:
                got = (await s.b.GetJob(bpb.GetJobRequest(job_id=job.job_id),
                                        metadata=md)).job
                if got.metrics.processed_requests >= n * 0.3:
                    break
                await asyncio.sleep(0.02)
        first.kill()
        assert first.process is not None and first.process.returncode == -9
        sent_before = sum(chat_prompts(fake, tag).values())
        second = ServerProcess(tmp_path, env=env).start()
        try:
            async with grpc.aio.insecure_channel(second.address) as ch:
                s = Stubs(ch, md)
                final, _ = await s.watch(job.job_id)
                assert final.state == bpb.JOB_STATE_SUCCEEDED
                assert final.metrics.successful_requests == n
                rows = await s.rows("k")
                assert all(rows[r].cells["b"].status == DONE for r in ids)
        finally:
            second.terminate()
        prompts = chat_prompts(fake, tag)
        assert sent_before < 2 * n  # the kill came mid-job
        assert len([p for p in prompts if p.startswith("answer ")]) == n
        # Only calls the kill could lose are sent again: those in flight (8 workers) and
        # those answered whose cell was not yet committed (the cell writer's group commit).
        # A cell committed before the kill (rows half done included) is never generated
        # again.
        twice = sum(c - 1 for c in prompts.values())
        print(f"SIGKILL at 30%: {sent_before} calls before the kill, {twice} sent again")
        assert twice <= 16, prompts.most_common(10)
        assert sum(prompts.values()) - 2 * n <= 16
    finally:
        first.kill()
        fake.stop()


async def test_5000_row_backfill_writes_every_cell_exactly_once(
        channel: grpc.aio.Channel, md: Metadata, fake: FakeOpenAI) -> None:
    s = Stubs(channel, md)
    tag = uuid.uuid4().hex[:6]
    n = 5000
    ids = await s.table("big", n, cols=[llm_col("a", "answer ${q}", model="fake/gpt")],
                        tag=tag)
    t0 = time.perf_counter()
    job = await s.job("big", all_rows=True, regen_strategy=pb.REGEN_STRATEGY_RUN_SELECTED,
                      output_column_id="a", only_missing=True)
    final, events = await s.watch(job.job_id)
    elapsed = time.perf_counter() - t0
    assert final.state == bpb.JOB_STATE_SUCCEEDED
    assert final.metrics.successful_requests == n
    assert final.metrics.provider_calls == n
    progress = [e for e in events if e.event_type == bpb.JOB_EVENT_TYPE_PROGRESS]
    assert progress and progress[-1].metrics.processed_requests <= n
    rows = await s.rows("big")
    assert all(rows[r].cells["a"].status == DONE and rows[r].cells["a"].value.string_value
               for r in ids)
    prompts = chat_prompts(fake, tag)
    assert len(prompts) == n and set(prompts.values()) == {1}
    print(f"5000-row backfill: {elapsed:.1f}s, ideal {n * 0.02 / WORKERS:.1f}s")


async def test_python_client_handles_and_the_cli(server: ServerProcess, channel: grpc.aio.Channel,
                                                 md: Metadata, fake: FakeOpenAI) -> None:
    from rowforge.clients import AsyncRowForge, RowForge, TableJob
    from rowforge.clients._table_jobs import eta_seconds

    s = Stubs(channel, md)
    project = md[0][1]
    tag = uuid.uuid4().hex[:6]
    ids = await s.table("cl", 40, cols=two_cols(), tag=tag)

    def sync_part() -> None:
        with RowForge(address=server.address, project_id=project) as client:
            job = client.table.regen_table_rows_job("action", "cl", row_ids=ids[:10],
                                                    regen_strategy="run_before",
                                                    output_column_id="a")
            assert isinstance(job, TableJob)
            events = list(job.watch())
            assert sum(e.event_type == "request_succeeded" for e in events) == 10
            assert events[-1].state.is_terminal
            final = job.wait()
            assert final.state.value == "succeeded"
            assert final.metrics.successful_requests == 10
            assert eta_seconds(final) == 0.0
            assert job.cancel  # exists; cancelling an ended job is FAILED_PRECONDITION
    await asyncio.to_thread(sync_part)
    rows = await s.rows("cl")
    assert all(rows[r].cells["a"].value.string_value for r in ids[:10])
    assert not any(rows[r].cells["b"].value.string_value for r in ids[:10])  # run_before a

    async with AsyncRowForge(address=server.address, project_id=project) as client:
        job = await client.table.backfill_column("action", "cl", "b")
        final = await job.wait()  # type: ignore[misc]
        assert final.state.value == "succeeded" and final.metrics.total_requests == 40
    rows = await s.rows("cl")
    assert all(rows[r].cells["b"].value.string_value for r in ids)

    def cli() -> None:
        import json
        import os
        import subprocess
        import sys

        env = {k: v for k, v in os.environ.items() if not k.startswith("ROWFORGE_")}
        env.update(ROWFORGE_ADDRESS=server.address, ROWFORGE_PROJECT_ID=project)
        run = subprocess.run(
            [sys.executable, "-m", "rowforge.clients.cli", "tables", "regen", "action", "cl",
             "--all", "--watch", "--json"], env=env, capture_output=True, text=True,
            timeout=120)
        assert run.returncode == 0, run.stderr
        out = json.loads(run.stdout)
        assert out["state"] == "succeeded" and out["metrics"]["successful_requests"] == 40
        run = subprocess.run(
            [sys.executable, "-m", "rowforge.clients.cli", "tables", "regen", "action", "cl",
             "--where", "q = 'nothing'"], env=env, capture_output=True, text=True, timeout=60)
        assert run.returncode != 0 and "no row matches" in run.stderr
        run = subprocess.run(
            [sys.executable, "-m", "rowforge.clients.cli", "tables", "backfill", "action",
             "cl", "b", "--watch"], env=env, capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        assert "succeeded" in run.stdout and "rows" in run.stderr
        csv = Path(tempfile.mkdtemp()) / "more.csv"
        csv.write_text("q\n" + "".join(f"{tag}m{i}\n" for i in range(20)))
        run = subprocess.run(
            [sys.executable, "-m", "rowforge.clients.cli", "tables", "add-rows", "action",
             "cl", str(csv), "--job", "--watch", "--json"], env=env, capture_output=True,
            text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        out = json.loads(run.stdout)
        assert out["state"] == "succeeded" and out["metrics"]["successful_requests"] == 20
    await asyncio.to_thread(cli)
    assert chat_prompts(fake, f"{tag}m")[f"answer {tag}m3"] == 1


async def test_import_then_generate_in_a_job(server: ServerProcess, channel: grpc.aio.Channel,
                                             md: Metadata, fake: FakeOpenAI) -> None:
    from rowforge.clients import RowForge

    s = Stubs(channel, md)
    tag = uuid.uuid4().hex[:6]
    await s.table("imp", 0, cols=two_cols(), tag=tag)
    csv = "q\n" + "".join(f"{tag}i{i}\n" for i in range(50))

    def run() -> tuple[Any, Any]:
        with RowForge(address=server.address, project_id=md[0][1]) as client:
            result = client.table.import_rows("action", "imp", csv.encode(),
                                              generate_in_job=True)
            return result, client.batch.get_job(result.job_id) if result.job_id else None
    result, job = await asyncio.to_thread(run)
    assert result.row_count == 50 and result.job_id and job is not None
    final, _ = await s.watch(result.job_id)
    assert final.state == bpb.JOB_STATE_SUCCEEDED and final.metrics.successful_requests == 50
    rows = await s.rows("imp")
    assert all(r.cells["b"].status == DONE for r in rows.values())
    prompts = chat_prompts(fake, tag)
    assert sum(prompts.values()) == 100 and set(prompts.values()) == {1}


async def test_a_failing_call_is_retried_by_the_job_only(
        channel: grpc.aio.Channel, md: Metadata, fake: FakeOpenAI) -> None:
    # The job's gate retries transient errors (ROWFORGE_BATCH_MAX_ATTEMPTS=8 here); the
    # cell executor's own retries (3 attempts, for interactive calls) must not wrap them.
    s = Stubs(channel, md)
    tag = uuid.uuid4().hex[:6]
    await s.table("r", 1, cols=[llm_col("a", "answer ${q}", model="fake/gpt")], tag=tag)
    fake.add_rule(f"answer {tag}q0", 503)
    job = await s.job("r", all_rows=True)
    final, _ = await s.watch(job.job_id)
    assert final.metrics.failed_requests == 1
    assert chat_prompts(fake, tag)[f"answer {tag}q0"] == 8
    assert final.metrics.provider_calls == 8
