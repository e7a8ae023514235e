"""Batch callbacks never keep the interpreter alive after the job ends: a seed-style program
(callbacks registered, job submitted, nothing waited on) delivers every callback and exits as
soon as the job has ended; one that stops the callbacks exits at once."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

from tests.support.server import ServerProcess

PROGRAM = textwrap.dedent("""
    import sys, time
    from rowforge.clients.batch import create_batch_job, AjaxAiRequestItem

    job = create_batch_job(model="rowforge/chat")
    job.on_request_complete(lambda e: print("callback", e.request_id, e.event_type, flush=True))
    for i in range(3):
        job.add_request(AjaxAiRequestItem(request_id=f"r{i}").add_text(f"Say {i}"))
    job.submit()
    if sys.argv[1] == "stop":
        job.stop_callbacks()
    print("main done", flush=True)
""")


def run(server: ServerProcess, mode: str) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROWFORGE_")}
    env["ROWFORGE_ADDRESS"] = server.address
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", PROGRAM, mode], env=env, capture_output=True,
                            text=True, timeout=120)
    return result, time.monotonic() - started


def test_callbacks_are_delivered_then_the_program_exits(server: ServerProcess) -> None:
    result, seconds = run(server, "follow")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "main done"
    assert sorted(x.split()[1] for x in lines if x.startswith("callback")) == ["r0", "r1", "r2"]
    assert seconds < 60  # it ended with the job, well inside the 120 s limit


def test_stopped_callbacks_do_not_hold_the_program(server: ServerProcess) -> None:
    result, seconds = run(server, "stop")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["main done"]
    assert seconds < 30
