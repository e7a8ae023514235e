"""The CLI's job watch: no ETA while a table job still queues its rows (its total grows)."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from rowforge.clients import _cli_commands
from rowforge.clients.batch_jobs import Job, JobEvent, JobMetrics, JobState


class FakeBatch:
    def __init__(self, jobs: list[Job], events: list[JobEvent]) -> None:
        self.jobs, self.events = jobs, events
        self.looks = 0

    def get_job(self, job_id: str) -> Job:
        self.looks += 1
        return self.jobs.pop(0)

    def watch_job(self, job_id: str) -> Iterator[JobEvent]:
        yield from self.events


def job(state: JobState, processed: int, total: int, *, queuing: bool) -> Job:
    return Job(job_id="j", state=state, queuing=queuing,
               metrics=JobMetrics(total_requests=total, processed_requests=processed))


def event(state: JobState, processed: int, total: int) -> JobEvent:
    return JobEvent(event_type="progress", state=state,
                    metrics=JobMetrics(total_requests=total, processed_requests=processed))


def test_no_eta_while_the_job_queues_rows_then_eta(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(_cli_commands, "QUEUING_RECHECK_S", 0.0)
    run = JobState.PROCESSING
    batch = FakeBatch(
        jobs=[job(run, 0, 256, queuing=True),  # when the watch starts
              job(run, 100, 500, queuing=True),  # looked at again: still queuing
              job(run, 400, 1000, queuing=False),  # queuing done
              job(JobState.SUCCEEDED, 1000, 1000, queuing=False)],  # the end
        events=[event(run, 100, 500), event(run, 400, 1000),
                event(JobState.SUCCEEDED, 1000, 1000)])
    code = _cli_commands._watch(SimpleNamespace(batch=batch), "j",
                                argparse.Namespace(json=False), unit="rows", eta=True)
    assert code == 0
    lines = capsys.readouterr().err.splitlines()
    queuing = [line for line in lines if "queuing rows" in line]
    assert queuing and all("ETA" not in line for line in queuing)
    after = next(line for line in lines if line.startswith("job j: 400/1000"))
    assert "queuing" not in after and "ETA" in after
    assert batch.looks == 4


def test_a_job_that_is_not_queuing_is_never_looked_at_again(
        capsys: pytest.CaptureFixture[str]) -> None:
    run = JobState.PROCESSING
    batch = FakeBatch(jobs=[job(run, 0, 1000, queuing=False),
                            job(JobState.SUCCEEDED, 1000, 1000, queuing=False)],
                      events=[event(run, 400, 1000), event(JobState.SUCCEEDED, 1000, 1000)])
    _cli_commands._watch(SimpleNamespace(batch=batch), "j",
                         argparse.Namespace(json=False), unit="rows", eta=True)
    assert batch.looks == 2
    assert "ETA" in next(line for line in capsys.readouterr().err.splitlines()
                         if line.startswith("job j: 400/1000"))
