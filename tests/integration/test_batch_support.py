"""Helpers shared by the BatchJobService integration tests (no tests here)."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable
from typing import Any

from google.protobuf import struct_pb2

from rowforge.v1 import batch_job_service_pb2 as pb
from rowforge.v1 import batch_job_service_pb2_grpc

Metadata = tuple[tuple[str, str], ...]
Stub = batch_job_service_pb2_grpc.BatchJobServiceStub

TERMINAL = {pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED}


def project() -> Metadata:
    """A fresh project of its own (auth is off: x-project-id picks it)."""
    return (("x-project-id", f"t-{uuid.uuid4().hex[:12]}"),)


def struct(value: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(value)
    return out


def text_request(request_id: str, text: str | None = None, **fields: Any) -> pb.BatchRequest:
    parts = [pb.ContentPart(text=text if text is not None else f"Describe item {request_id}.")]
    for key in ("output_schema", "metadata"):
        if isinstance(fields.get(key), dict):
            fields[key] = struct(fields[key])
    return pb.BatchRequest(request_id=request_id, content_parts=parts, **fields)


async def create(stub: Stub, md: Metadata, **fields: Any) -> pb.Job:
    if isinstance(fields.get("metadata"), dict):
        fields["metadata"] = struct(fields["metadata"])
    return (await stub.CreateJob(pb.CreateJobRequest(**fields), metadata=md, timeout=30)).job


async def add(stub: Stub, md: Metadata, job_id: str, requests: Iterable[pb.BatchRequest]
              ) -> pb.AddRequestsResponse:
    return await stub.AddRequests(pb.AddRequestsRequest(job_id=job_id, requests=list(requests)),
                                  metadata=md, timeout=60)


async def add_all(stub: Stub, md: Metadata, job_id: str, requests: list[pb.BatchRequest]
                  ) -> None:
    for start in range(0, len(requests), 100):
        await add(stub, md, job_id, requests[start:start + 100])


async def get_job(stub: Stub, md: Metadata, job_id: str) -> pb.Job:
    return (await stub.GetJob(pb.GetJobRequest(job_id=job_id), metadata=md, timeout=30)).job


async def results(stub: Stub, md: Metadata, job_id: str, cursor: int = 0,
                  follow: bool | None = None, timeout: float = 90
                  ) -> tuple[list[pb.BatchResult], pb.Job]:
    """Every result after ``cursor`` and the final job message."""
    request = pb.StreamResultsRequest(job_id=job_id, cursor=cursor)
    if follow is not None:
        request.follow = follow
    out: list[pb.BatchResult] = []
    final: pb.Job | None = None
    async for message in stub.StreamResults(request, metadata=md, timeout=timeout):
        assert final is None, "nothing may follow the job message"
        if message.HasField("result"):
            out.append(message.result)
        else:
            final = message.job
    assert final is not None, "the stream must end with the job"
    return out, final


async def run_job(stub: Stub, md: Metadata, requests: list[pb.BatchRequest], **create_fields: Any
                  ) -> tuple[pb.Job, list[pb.BatchResult]]:
    """Create, populate, submit, and stream every result until the job ends."""
    job = await create(stub, md, **create_fields)
    await add_all(stub, md, job.job_id, requests)
    await stub.SubmitJob(pb.SubmitJobRequest(job_id=job.job_id), metadata=md, timeout=30)
    found, final = await results(stub, md, job.job_id)
    return final, found


def check_complete(final: pb.Job, found: list[pb.BatchResult], request_ids: Iterable[str]
                   ) -> None:
    """Every request has exactly one result, numbered 1..n without gaps, and the counts add up."""
    ids = list(request_ids)
    assert final.state in TERMINAL
    assert [r.sequence for r in found] == list(range(1, len(ids) + 1))
    assert Counter(r.request_id for r in found) == Counter(ids)
    m = final.metrics
    assert m.total_requests == len(ids)
    assert m.successful_requests + m.failed_requests + m.cancelled_requests == len(ids)
    assert m.processed_requests == len(ids)
    by_state = Counter(r.state for r in found)
    assert by_state[pb.REQUEST_STATE_SUCCEEDED] == m.successful_requests
    assert by_state[pb.REQUEST_STATE_FAILED] == m.failed_requests
    assert by_state[pb.REQUEST_STATE_CANCELLED] == m.cancelled_requests


def prompts_of(fake: Any) -> list[tuple[str, float]]:
    """(prompt text, arrival time) of every chat request the fake received."""
    out = []
    for r in fake.requests_to("/v1/chat/completions"):
        messages = (r.json or {}).get("messages") or []
        texts = []
        for m in messages:
            content = m.get("content")
            if isinstance(content, str):
                texts.append(content)
            elif isinstance(content, list):
                texts += [p.get("text", "") for p in content if p.get("type") == "text"]
        out.append(("\n".join(texts), r.timestamp))
    return out
