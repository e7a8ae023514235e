"""BatchJobService: durable LLM batch jobs over the batch domain (:mod:`rowforge.server.batch`).

Thin: protobuf in, domain call, protobuf out. Contract details the proto leaves open:

* CreateJob defaults: the default chat model, temperature 0.5, 1024 output tokens, batch size
  20. An unknown model is NOT_FOUND (``MODEL_NOT_FOUND``); an idempotency key reused with other
  parameters is INVALID_ARGUMENT ``IDEMPOTENCY_KEY_REUSED``.
* AddRequests is all or nothing. A request_id repeated in the call or already in the job is
  ALREADY_EXISTS ``DUPLICATE_REQUEST_ID``; adding to a submitted or cancelled job is
  FAILED_PRECONDITION ``JOB_NOT_OPEN``. ``file://`` images are checked (exist, are images)
  when added. StreamAddRequests is all or nothing too: a refused message (its index is the
  ErrorInfo metadata ``message``) or a client that goes away takes back what the stream added.
* SubmitJob of an empty job is FAILED_PRECONDITION ``JOB_EMPTY``, of a cancelled one
  ``JOB_CANCELLED``; submitting a job that already runs or ran returns it unchanged (safe to
  retry). CancelJob of a finished job is FAILED_PRECONDITION ``JOB_ALREADY_ENDED``.
* Results are numbered 1..total without gaps; every request gets exactly one (a cancelled one
  too). WatchJob request events carry the result's sequence; a state or progress event
  carries the last result sequence before it. Once the retention purged a job's results,
  StreamResults/WatchJob from before its end are FAILED_PRECONDITION ``RESULTS_EXPIRED`` and
  GetRequest is NOT_FOUND ``RESULTS_EXPIRED``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf import struct_pb2

from rowforge import codec
from rowforge.server.auth import current_project
from rowforge.server.batch import (
    BatchService,
    ContentPart,
    ErrorDetail,
    EventType,
    Job,
    JobConfig,
    JobMetrics,
    JobState,
    RequestInput,
    RequestState,
    Result,
)
from rowforge.server.batch.validation import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_MAX_OUTPUT_TOKENS,
    DEFAULT_TEMPERATURE,
)
from rowforge.server.errors import InvalidArgument
from rowforge.server.services._convert import struct_to_dict
from rowforge.v1 import batch_job_service_pb2 as pb
from rowforge.v1 import batch_job_service_pb2_grpc, common_pb2

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["BatchJobService"].full_name

JOB_STATES = {s: pb.JobState.Value(f"JOB_STATE_{s.name}") for s in JobState}
JOB_STATES_FROM_PB = {v: k for k, v in JOB_STATES.items()}
REQUEST_STATES = {s: pb.RequestState.Value(f"REQUEST_STATE_{s.name}") for s in RequestState}
EVENT_TYPES = {t: pb.JobEventType.Value(f"JOB_EVENT_TYPE_{t.name}") for t in EventType}


# --- protobuf -> domain ---------------------------------------------------------------------

def job_config(request: pb.CreateJobRequest) -> JobConfig:
    return JobConfig(
        model=request.model,
        temperature=request.temperature if request.HasField("temperature")
        else DEFAULT_TEMPERATURE,
        max_output_tokens=request.max_output_tokens if request.HasField("max_output_tokens")
        else DEFAULT_MAX_OUTPUT_TOKENS,
        system_instruction=request.system_instruction, job_type=request.job_type,
        metadata=struct_to_dict(request.metadata, "metadata")
        if request.HasField("metadata") else None,
        max_batch_size=request.max_batch_size or DEFAULT_BATCH_SIZE)


def request_inputs(requests: Any, field: str = "requests") -> list[RequestInput]:
    out = []
    for i, r in enumerate(requests):
        parts = []
        for j, part in enumerate(r.content_parts):
            kind = part.WhichOneof("part")
            if kind == "text" and part.text:
                parts.append(ContentPart(text=part.text))
            elif kind == "image":
                parts.append(ContentPart(image_uri=part.image.uri,
                                         content_type=part.image.content_type))
            else:
                raise InvalidArgument.field(f"{field}[{i}].content_parts[{j}]",
                                            "must be a non-empty text or an image")
        out.append(RequestInput(
            request_id=r.request_id, parts=tuple(parts),
            output_schema=struct_to_dict(r.output_schema, f"{field}[{i}].output_schema")
            if r.HasField("output_schema") else None,
            output_schema_name=r.output_schema_name,
            metadata=struct_to_dict(r.metadata, f"{field}[{i}].metadata")
            if r.HasField("metadata") else None))
    return out


# --- domain -> protobuf ---------------------------------------------------------------------

def _struct(json_text: str | None) -> struct_pb2.Struct | None:
    if not json_text:
        return None
    value = json.loads(json_text)
    return codec.struct_to_pb(value) if isinstance(value, dict) else None


def _value(json_text: str) -> struct_pb2.Value:
    return codec.value_to_pb(json.loads(json_text), str)


def metrics_pb(m: JobMetrics) -> pb.JobMetrics:
    return pb.JobMetrics(
        total_requests=m.total_requests, processed_requests=m.processed,
        successful_requests=m.succeeded, failed_requests=m.failed,
        cancelled_requests=m.cancelled, input_tokens=m.input_tokens,
        output_tokens=m.output_tokens, total_tokens=m.total_tokens, cost_usd=m.cost_usd,
        duration_seconds=m.duration_seconds, throughput_rps=m.throughput_rps,
        provider_calls=m.provider_calls)


def job_pb(job: Job) -> pb.Job:
    c = job.config
    out = pb.Job(job_id=job.id, state=JOB_STATES[job.state], model=c.model,
                 temperature=c.temperature, max_output_tokens=c.max_output_tokens,
                 system_instruction=c.system_instruction, job_type=c.job_type,
                 max_batch_size=c.max_batch_size, metrics=metrics_pb(job.metrics),
                 create_time=codec.timestamp_from_epoch(job.create_time), submit_time=codec.timestamp_from_epoch(job.submit_time),
                 end_time=codec.timestamp_from_epoch(job.end_time), expire_time=codec.timestamp_from_epoch(job.expire_time),
                 queuing=job.queuing)
    if c.metadata is not None:
        out.metadata.update(c.metadata)
    return out


def error_pb(error: ErrorDetail) -> common_pb2.ItemError:
    return common_pb2.ItemError(code=error.code, reason=error.reason, message=error.message,
                            retryable=error.retryable)


def result_pb(r: Result) -> pb.BatchResult:
    out = pb.BatchResult(
        sequence=r.sequence, request_id=r.request_id, state=REQUEST_STATES[r.state],
        response_text=r.response_text, attempts=r.attempts,
        usage=common_pb2.Usage(prompt_tokens=r.prompt_tokens,
                               completion_tokens=r.completion_tokens,
                               total_tokens=r.prompt_tokens + r.completion_tokens),
        complete_time=codec.timestamp_from_epoch(r.complete_time), metadata=_struct(r.metadata))
    if r.response_json is not None:
        out.response_json.CopyFrom(_value(r.response_json))
    if r.error is not None:
        out.error.CopyFrom(error_pb(r.error))
    return out


def request_pb(r: RequestInput) -> pb.BatchRequest:
    out = pb.BatchRequest(request_id=r.request_id, output_schema_name=r.output_schema_name)
    for part in r.parts:
        if part.text is not None:
            out.content_parts.add(text=part.text)
        else:
            out.content_parts.add(image=pb.ImagePart(uri=part.image_uri or "",
                                                     content_type=part.content_type))
    if r.output_schema is not None:
        out.output_schema.update(r.output_schema)
    if r.metadata is not None:
        out.metadata.update(r.metadata)
    return out


# --- the servicer ----------------------------------------------------------------------------

class BatchJobServicer(batch_job_service_pb2_grpc.BatchJobServiceServicer):
    """Batch jobs of the calling project."""

    def __init__(self, batch: BatchService) -> None:
        self.batch = batch

    async def CreateJob(self, request: pb.CreateJobRequest, context: grpc.aio.ServicerContext
                        ) -> pb.CreateJobResponse:
        job = await self.batch.create_job(current_project(), job_config(request),
                                          request.idempotency_key)
        return pb.CreateJobResponse(job=job_pb(job))

    async def AddRequests(self, request: pb.AddRequestsRequest,
                          context: grpc.aio.ServicerContext) -> pb.AddRequestsResponse:
        added, total = await self.batch.add_requests(current_project(), request.job_id,
                                                     request_inputs(request.requests))
        return pb.AddRequestsResponse(added_count=added, total_requests=total)

    async def StreamAddRequests(self, request_iterator: AsyncIterator[pb.StreamAddRequestsRequest],
                                context: grpc.aio.ServicerContext
                                ) -> pb.StreamAddRequestsResponse:
        async def batches() -> AsyncIterator[tuple[str, list[RequestInput]]]:
            async for message in request_iterator:
                yield message.job_id, request_inputs(message.requests)

        _, added, total = await self.batch.add_request_stream(current_project(), batches())
        return pb.StreamAddRequestsResponse(added_count=added, total_requests=total)

    async def SubmitJob(self, request: pb.SubmitJobRequest, context: grpc.aio.ServicerContext
                        ) -> pb.SubmitJobResponse:
        return pb.SubmitJobResponse(job=job_pb(await self.batch.submit(current_project(),
                                                                       request.job_id)))

    async def GetJob(self, request: pb.GetJobRequest, context: grpc.aio.ServicerContext
                     ) -> pb.GetJobResponse:
        return pb.GetJobResponse(job=job_pb(await self.batch.get_job(current_project(),
                                                                     request.job_id)))

    async def ListJobs(self, request: pb.ListJobsRequest, context: grpc.aio.ServicerContext
                       ) -> pb.ListJobsResponse:
        state = None
        if request.state != pb.JOB_STATE_UNSPECIFIED:
            state = JOB_STATES_FROM_PB.get(request.state)
            if state is None:
                raise InvalidArgument.field("state", "is not a known job state")
        page = await self.batch.list_jobs(current_project(), offset=request.offset,
                                          limit=request.limit, page_token=request.page_token,
                                          state=state, job_type=request.job_type)
        return pb.ListJobsResponse(items=[job_pb(j) for j in page.items],
                                   next_page_token=page.next_page_token, total=page.total)

    async def CancelJob(self, request: pb.CancelJobRequest, context: grpc.aio.ServicerContext
                        ) -> pb.CancelJobResponse:
        return pb.CancelJobResponse(job=job_pb(await self.batch.cancel(current_project(),
                                                                       request.job_id)))

    async def GetRequest(self, request: pb.GetRequestRequest,
                         context: grpc.aio.ServicerContext) -> pb.GetRequestResponse:
        status = await self.batch.get_request(current_project(), request.job_id,
                                              request.request_id)
        out = pb.GetRequestResponse(request_id=status.request_id,
                                    state=REQUEST_STATES[status.state],
                                    attempts=status.attempts, request=request_pb(status.request))
        if status.result is not None:
            out.result.CopyFrom(result_pb(status.result))
        if status.last_error is not None:
            out.last_error.CopyFrom(error_pb(status.last_error))
        return out

    async def StreamResults(self, request: pb.StreamResultsRequest,
                            context: grpc.aio.ServicerContext
                            ) -> AsyncIterator[pb.StreamResultsResponse]:
        follow = request.follow if request.HasField("follow") else True
        async for item in self.batch.results(current_project(), request.job_id,
                                             request.cursor, follow=follow):
            if isinstance(item, Result):
                yield pb.StreamResultsResponse(result=result_pb(item))
            else:
                yield pb.StreamResultsResponse(job=job_pb(item))

    async def WatchJob(self, request: pb.WatchJobRequest, context: grpc.aio.ServicerContext
                       ) -> AsyncIterator[pb.WatchJobResponse]:
        async for event in self.batch.watch(current_project(), request.job_id,
                                            request.cursor):
            out = pb.WatchJobResponse(sequence=event.sequence, event_type=EVENT_TYPES[event.type],
                                      request_id=event.request_id,
                                      state=JOB_STATES[event.state])
            if event.result is not None:
                out.result.CopyFrom(result_pb(event.result))
            if event.metrics is not None:
                out.metrics.CopyFrom(metrics_pb(event.metrics))
            yield out
