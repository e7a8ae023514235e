"""The batch client's queue over a real server: the flush timer, adds from many threads, a
failed flush retried and reported, requests the server refuses named by id while the valid
ones are sent, and no timer thread left behind (issue 11 items 3 and 7)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from rowforge.clients import RowForge
from rowforge.clients import exceptions as ex
from rowforge.clients.batch import AjaxAiRequestItem, InvalidBatchRequestsError, create_batch_job
from tests.support.server import ServerProcess
from tests.support.waiting import eventually_sync as eventually


def item(rid: str) -> AjaxAiRequestItem:
    return AjaxAiRequestItem(request_id=rid).add_text(f"say {rid}")


def total(address: str, job_id: str) -> int:
    with RowForge(address=address) as client:
        return client.batch.get_job(job_id).metrics.total_requests


def test_a_partial_batch_goes_out_after_the_flush_interval(server: ServerProcess) -> None:
    with create_batch_job(address=server.address, model="rowforge/chat", max_batch_size=10,
                          flush_interval_s=0.3) as job:
        for i in range(3):
            assert job.add_request(item(f"t{i}")).queued
        assert total(server.address, job.job_id) == 0
        eventually(lambda: total(server.address, job.job_id) == 3)  # nobody called flush()
        job.submit()
        assert not [t for t in threading.enumerate() if t.name == "rowforge-batch-flush"]
    with pytest.raises(ex.InvalidArgumentError):
        create_batch_job(address=server.address, flush_interval_s=0)


def test_adds_from_many_threads_are_sent_once_each(server: ServerProcess) -> None:
    job = create_batch_job(address=server.address, model="rowforge/chat", max_batch_size=7,
                           flush_interval_s=0.05)
    errors: list[BaseException] = []

    def adder(k: int) -> None:
        try:
            for i in range(40):
                job.add_request(item(f"w{k}_{i}"))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=adder, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    job.submit()
    ids = [r.request_id for r in job.get_results()]
    assert sorted(ids) == sorted(f"w{k}_{i}" for k in range(8) for i in range(40))
    assert job.get_metrics().total_requests == 320
    job.close()


def test_refused_requests_are_named_and_the_valid_ones_sent(server: ServerProcess) -> None:
    job = create_batch_job(address=server.address, model="rowforge/chat", max_batch_size=5,
                           flush_interval_s=0.2)
    for i in range(4):
        job.add_request(item("bad id!" if i == 2 else f"v{i}"))
    with pytest.raises(InvalidBatchRequestsError) as err:
        job.add_request(item("v4"))  # fills the batch: sent, one refused
    assert err.value.request_ids == ["bad id!"]
    assert "bad id!" in str(err.value) and err.value.field_violations
    assert total(server.address, job.job_id) == 4
    # found by the timer: raised by the next call, which is not queued
    job.add_request(AjaxAiRequestItem(request_id="v5").add_text("x").add_image(
        "https://example.com/a.png", content_type="text/plain"))
    eventually(lambda: total(server.address, job.job_id) == 4 and job._queue._failure is not None)
    with pytest.raises(InvalidBatchRequestsError) as err:
        job.add_request(item("v6"))
    assert err.value.request_ids == ["v5"]
    # fixed and added again
    job.add_request(item("v5"))
    job.add_request(item("v6"))
    assert job.flush() == 2
    job.submit()
    assert sorted(r.request_id for r in job.get_results()) == [f"v{i}" for i in (0, 1, 3, 4, 5, 6)]
    job.close()


def test_a_failed_flush_is_retried_reported_and_sent_once(tmp_path: Path) -> None:
    proc = ServerProcess(tmp_path).start()
    port = proc.port
    try:
        job = create_batch_job(address=proc.address, model="rowforge/chat", max_batch_size=10,
                               flush_interval_s=0.2)
        job.add_request(item("a1"))
        proc.kill()
        eventually(lambda: job._queue._failure is not None, timeout=60)  # the timer gave up
        with pytest.raises(ex.UnavailableError):
            job.add_request(item("a2"))  # the failure is reported; a2 is not queued
        proc = ServerProcess(tmp_path, port=port).start()
        deadline = time.monotonic() + 60
        for step in (lambda: job.add_request(item("a2")), job.flush, job.submit):
            while True:  # the channel reconnects with backoff: failures until then
                try:
                    step()
                    break
                except ex.UnavailableError:
                    assert time.monotonic() < deadline
                    time.sleep(0.5)
        assert total(proc.address, job.job_id) == 2
        assert sorted(r.request_id for r in job.get_results()) == ["a1", "a2"]
        job.close()
    finally:
        proc.kill()


def test_no_timer_keeps_the_interpreter_alive(server: ServerProcess) -> None:
    script = textwrap.dedent(f"""
        import json, threading, time
        from rowforge.clients import RowForge
        from rowforge.clients.batch import AjaxAiRequestItem, create_batch_job
        job = create_batch_job(address={server.address!r}, model="rowforge/chat",
                               max_batch_size=50, flush_interval_s=0.2)
        job.add_request(AjaxAiRequestItem(request_id="x1").add_text("hi"))
        timers = [t.name for t in threading.enumerate() if t.name == "rowforge-batch-flush"]
        with RowForge(address={server.address!r}) as c:
            deadline = time.monotonic() + 20
            while c.batch.get_job(job.job_id).metrics.total_requests == 0:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        job.add_request(AjaxAiRequestItem(request_id="x2").add_text("hi"))  # queued at exit
        print(json.dumps({{"timers": timers}}), flush=True)
    """)
    start = time.monotonic()
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"timers": ["rowforge-batch-flush"]}
    assert time.monotonic() - start < 30


def test_many_refused_requests_in_one_batch_are_all_named(server: ServerProcess) -> None:
    """More invalid requests than an error's details can list: the refusal's bitmask still
    names every one (issue 11.7)."""
    job = create_batch_job(address=server.address, model="rowforge/chat", max_batch_size=100)
    bad = {f"bad {i}!" for i in range(0, 100, 2)}
    for i in range(99):
        job.add_request(item(f"bad {i}!" if i % 2 == 0 else f"ok{i}"))
    with pytest.raises(InvalidBatchRequestsError) as err:
        job.add_request(item("ok99"))
    assert set(err.value.request_ids) == bad
    assert total(server.address, job.job_id) == 50
    job.close()
