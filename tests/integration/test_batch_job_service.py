"""BatchJobService over a real server: every RPC and state transition, the seed's flows
(quick start, structured output, callbacks through WatchJob), images, and bad input on every
RPC with its status and nothing written."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import uuid
from collections import Counter

import grpc
import jsonschema
import pytest
from PIL import Image

from rowforge.v1 import batch_job_service_pb2 as pb
from rowforge.v1 import batch_job_service_pb2_grpc, file_service_pb2, file_service_pb2_grpc
from tests.integration.test_batch_support import (
    add,
    check_complete,
    create,
    get_job,
    project,
    prompts_of,
    results,
    run_job,
    text_request,
)
from tests.support.status import fails_on_fields as fails
from tests.support.status import violated_fields as error_details
from tests.support.waiting import eventually

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
EXISTS = grpc.StatusCode.ALREADY_EXISTS
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
MiB = 1024 * 1024

PRODUCT = {
    "type": "object",
    "properties": {"title": {"type": "string"}, "description": {"type": "string"},
                   "features": {"type": "array", "items": {"type": "string"}},
                   "price_range": {"type": "string"}},
    "required": ["title", "description", "features", "price_range"],
    "additionalProperties": False,
}


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> batch_job_service_pb2_grpc.BatchJobServiceStub:
    return batch_job_service_pb2_grpc.BatchJobServiceStub(channel)


# --- the seed's flows ---------------------------------------------------------------------------

@pytest.mark.parametrize("model", ["rowforge/chat", "fake/gpt"])
async def test_quick_start_runs_every_state(stub, model: str) -> None:
    md = project()
    job = await create(stub, md, model=model, job_type="quick", metadata={"team": "a"})
    assert job.state == pb.JOB_STATE_CREATED
    assert (job.temperature, job.max_output_tokens, job.max_batch_size) == \
        (pytest.approx(0.5), 1024, 20)
    assert job.metadata["team"] == "a" and job.create_time.seconds > 0
    reply = await add(stub, md, job.job_id, [text_request(f"req_{i}") for i in range(30)])
    assert (reply.added_count, reply.total_requests) == (30, 30)
    assert (await get_job(stub, md, job.job_id)).state == pb.JOB_STATE_POPULATING
    submitted = (await stub.SubmitJob(pb.SubmitJobRequest(job_id=job.job_id), metadata=md)).job
    assert submitted.state in (pb.JOB_STATE_READY, pb.JOB_STATE_PROCESSING,
                               pb.JOB_STATE_SUCCEEDED)
    assert submitted.submit_time.seconds > 0
    found, final = await results(stub, md, job.job_id)
    check_complete(final, found, [f"req_{i}" for i in range(30)])
    assert final.state == pb.JOB_STATE_SUCCEEDED
    assert all(r.state == pb.REQUEST_STATE_SUCCEEDED and r.response_text for r in found)
    assert all(r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens > 0
               for r in found)
    m = final.metrics
    assert m.input_tokens == sum(r.usage.prompt_tokens for r in found)
    assert m.output_tokens == sum(r.usage.completion_tokens for r in found)
    assert m.total_tokens == m.input_tokens + m.output_tokens
    assert m.duration_seconds > 0 and m.throughput_rps > 0
    assert final.end_time.seconds >= submitted.submit_time.seconds
    # results are kept 30 days by default
    assert 29 * 86400 < final.expire_time.seconds - final.end_time.seconds <= 30 * 86400 + 1
    # submitting again is harmless (a retried call), and the job stays as it is
    again = (await stub.SubmitJob(pb.SubmitJobRequest(job_id=job.job_id), metadata=md)).job
    assert again.state == pb.JOB_STATE_SUCCEEDED


async def test_structured_output_carries_parsed_json(stub, fake_openai) -> None:
    md = project()
    requests = [text_request(f"product_{i}", f"Generate a product description {i}",
                             output_schema=PRODUCT, output_schema_name="ProductDescription")
                for i in range(5)]
    requests.append(text_request("plain", "Just say hello"))
    final, found = await run_job(stub, md, requests, model="fake/gpt")
    check_complete(final, found, [r.request_id for r in requests])
    by_id = {r.request_id: r for r in found}
    for i in range(5):
        result = by_id[f"product_{i}"]
        value = json.loads(result.response_text)
        jsonschema.validate(value, PRODUCT)
        assert result.response_json.struct_value["title"] == value["title"]
        assert list(result.response_json.struct_value["features"]) == value["features"]
    assert not by_id["plain"].HasField("response_json")
    # the model was asked for the schema, strictly, under the schema's name
    sent = [r.json for r in fake_openai.requests_to("/v1/chat/completions")
            if "Generate a product description 0" in json.dumps(r.json)]
    assert sent[0]["response_format"] == {"type": "json_schema", "json_schema": {
        "name": "ProductDescription", "schema": PRODUCT, "strict": True}}
    reply = await stub.GetRequest(pb.GetRequestRequest(job_id=final.job_id,
                                                       request_id="product_1"), metadata=md)
    assert reply.result.response_json == by_id["product_1"].response_json
    assert reply.request.output_schema_name == "ProductDescription"


async def test_watch_job_gives_callbacks_and_resumes_from_a_cursor(stub) -> None:
    md = project()
    ids = [f"cb_{i}" for i in range(12)]
    job = await create(stub, md)
    await add(stub, md, job.job_id, [text_request(i) for i in ids])
    watch = stub.WatchJob(pb.WatchJobRequest(job_id=job.job_id), metadata=md, timeout=60)
    await stub.SubmitJob(pb.SubmitJobRequest(job_id=job.job_id), metadata=md)
    events = [e async for e in watch]
    states = [e.state for e in events if e.event_type == pb.JOB_EVENT_TYPE_STATE_CHANGED]
    assert states == [pb.JOB_STATE_CREATED, pb.JOB_STATE_POPULATING, pb.JOB_STATE_READY,
                      pb.JOB_STATE_PROCESSING, pb.JOB_STATE_SUCCEEDED]
    requests = [e for e in events if e.event_type == pb.JOB_EVENT_TYPE_REQUEST_SUCCEEDED]
    assert sorted(e.request_id for e in requests) == sorted(ids)
    assert [e.sequence for e in requests] == list(range(1, 13))
    assert all(e.result.request_id == e.request_id and e.result.response_text for e in requests)
    last = events[-1]
    assert last.event_type == pb.JOB_EVENT_TYPE_STATE_CHANGED
    assert last.state == pb.JOB_STATE_SUCCEEDED and last.metrics.successful_requests == 12
    # reconnecting after the 5th result gets exactly the rest, then the end
    rest = [e async for e in stub.WatchJob(pb.WatchJobRequest(job_id=job.job_id, cursor=5),
                                           metadata=md, timeout=30)]
    assert [e.sequence for e in rest if e.request_id] == list(range(6, 13))
    assert [e.state for e in rest if e.event_type == pb.JOB_EVENT_TYPE_STATE_CHANGED] == \
        [pb.JOB_STATE_SUCCEEDED]
    # progress events carry metrics and a resumable cursor
    for e in events:
        if e.event_type == pb.JOB_EVENT_TYPE_PROGRESS:
            assert e.metrics.total_requests == 12 and 0 < e.sequence <= 12


async def test_stream_results_resumes_without_gaps_or_duplicates(stub) -> None:
    md = project()
    ids = [f"r{i}" for i in range(40)]
    final, _ = await run_job(stub, md, [text_request(i) for i in ids])
    seen: list[pb.BatchResult] = []
    stream = stub.StreamResults(pb.StreamResultsRequest(job_id=final.job_id), metadata=md)
    async for message in stream:
        seen.append(message.result)
        if len(seen) == 17:
            stream.cancel()  # the client goes away mid-stream
            break
    rest, job = await results(stub, md, final.job_id, cursor=seen[-1].sequence)
    check_complete(job, seen + rest, ids)
    # a cursor at the end gives only the job; past it too
    assert (await results(stub, md, final.job_id, cursor=40))[0] == []
    assert (await results(stub, md, final.job_id, cursor=1000))[0] == []


async def test_follow_false_sends_what_exists_now(stub) -> None:
    md = project()
    job = await create(stub, md)
    await add(stub, md, job.job_id, [text_request("a"), text_request("b")])
    found, now = await results(stub, md, job.job_id, follow=False, timeout=10)
    assert found == [] and now.state == pb.JOB_STATE_POPULATING
    assert now.metrics.total_requests == 2


async def test_get_request_before_and_after(stub) -> None:
    md = project()
    job = await create(stub, md)
    await add(stub, md, job.job_id, [text_request(
        "one", "Tell me a fact", metadata={"customer": "c1", "n": 3},
        output_schema={"type": "object", "properties": {"fact": {"type": "string"}},
                       "required": ["fact"]}),
        pb.BatchRequest(request_id="img", content_parts=[
            pb.ContentPart(text="What is this?"),
            pb.ContentPart(image=pb.ImagePart(uri="https://example.com/cat.png",
                                              content_type="image/png"))])])
    before = await stub.GetRequest(pb.GetRequestRequest(job_id=job.job_id, request_id="one"),
                                   metadata=md)
    assert before.state == pb.REQUEST_STATE_PENDING and before.attempts == 0
    assert not before.HasField("result")
    assert before.request.metadata["customer"] == "c1"
    assert before.request.output_schema["required"] == ["fact"]
    assert before.request.content_parts[0].text == "Tell me a fact"
    img = await stub.GetRequest(pb.GetRequestRequest(job_id=job.job_id, request_id="img"),
                                metadata=md)
    assert img.request.content_parts[1].image.uri == "https://example.com/cat.png"
    await stub.SubmitJob(pb.SubmitJobRequest(job_id=job.job_id), metadata=md)
    await results(stub, md, job.job_id)
    after = await stub.GetRequest(pb.GetRequestRequest(job_id=job.job_id, request_id="one"),
                                  metadata=md)
    assert after.state == pb.REQUEST_STATE_SUCCEEDED and after.attempts == 1
    assert after.result.response_json.struct_value["fact"]
    assert after.result.metadata["customer"] == "c1" and after.result.metadata["n"] == 3
    assert not after.HasField("last_error")


async def test_request_metadata_is_never_sent_to_the_model(stub, fake_openai) -> None:
    md = project()
    marker = f"secret-{uuid.uuid4().hex}"
    final, found = await run_job(stub, md, [text_request(
        "m1", f"Hello there {marker[:6]}", metadata={"tracking": marker})], model="fake/gpt")
    assert found[0].metadata["tracking"] == marker
    assert not any(marker in json.dumps(r.json) for r in fake_openai.requests)
    assert final.state == pb.JOB_STATE_SUCCEEDED


async def test_images_by_url_and_by_file_uri_reach_the_model(stub, channel, fake_openai) -> None:
    md = project()
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buffer, "PNG")
    png = buffer.getvalue()
    files = file_service_pb2_grpc.FileServiceStub(channel)

    def upload():  # type: ignore[no-untyped-def]
        yield file_service_pb2.UploadFileRequest(metadata=file_service_pb2.FileMetadata(
            name="red.png", content_type="image/png"))
        yield file_service_pb2.UploadFileRequest(chunk=png)

    uri = (await files.UploadFile(upload(), metadata=md)).file.uri
    tag = uuid.uuid4().hex[:8]
    requests = [
        pb.BatchRequest(request_id="by_url", content_parts=[
            pb.ContentPart(text=f"Describe url {tag}"),
            pb.ContentPart(image=pb.ImagePart(uri="https://example.com/x.png"))]),
        pb.BatchRequest(request_id="by_file", content_parts=[
            pb.ContentPart(text=f"Describe file {tag}"),
            pb.ContentPart(image=pb.ImagePart(uri=uri))]),
    ]
    final, found = await run_job(stub, md, requests, model="fake/gpt")
    assert final.state == pb.JOB_STATE_SUCCEEDED, found
    sent = {}
    for r in fake_openai.requests_to("/v1/chat/completions"):
        text = json.dumps(r.json)
        for name in ("url", "file"):
            if f"Describe {name} {tag}" in text:
                parts = r.json["messages"][-1]["content"]
                sent[name] = next(p["image_url"]["url"] for p in parts
                                  if p["type"] == "image_url")
    assert sent["url"] == "https://example.com/x.png"
    assert sent["file"] == "data:image/png;base64," + base64.b64encode(png).decode()


# --- cancellation -------------------------------------------------------------------------------

async def test_cancel_stops_in_flight_calls_and_keeps_finished_results(stub, fake_openai) -> None:
    md = project()
    tag = uuid.uuid4().hex[:8]
    fast = [text_request(f"fast_{i}", f"quick {tag} {i}") for i in range(5)]
    # the fake holds these calls open (30 s) until the client gives up
    slow = [text_request(f"slow_{i}", f"[[fault:timeout]] slow {tag} {i}") for i in range(3)]
    job = await create(stub, md, model="fake/gpt")
    await add(stub, md, job.job_id, fast + slow)
    await stub.SubmitJob(pb.SubmitJobRequest(job_id=job.job_id), metadata=md)

    async def fast_done() -> bool:
        return (await get_job(stub, md, job.job_id)).metrics.successful_requests == 5

    async def slow_in_flight() -> int:
        return sum(1 for text, _ in prompts_of(fake_openai) if f"slow {tag}" in text)

    await eventually(fast_done)
    await eventually(lambda: slow_in_flight_sync(fake_openai, tag) == 3)
    started = asyncio.get_running_loop().time()
    cancelled = (await stub.CancelJob(pb.CancelJobRequest(job_id=job.job_id), metadata=md)).job
    assert asyncio.get_running_loop().time() - started < 2.0
    assert cancelled.state == pb.JOB_STATE_CANCELLED
    assert cancelled.metrics.cancelled_requests == 3
    assert cancelled.metrics.successful_requests == 5
    found, final = await results(stub, md, job.job_id)
    check_complete(final, found, [r.request_id for r in fast + slow])
    assert {r.request_id for r in found if r.state == pb.REQUEST_STATE_CANCELLED} == \
        {f"slow_{i}" for i in range(3)}
    assert [r.state for r in found[:5]] == [pb.REQUEST_STATE_SUCCEEDED] * 5  # kept, first
    # the provider calls were cut: the fake sees its connections closed
    await eventually(lambda: fake_openai.in_flight == 0, timeout=10)
    assert await slow_in_flight() == 3  # and nothing was retried after the cancel
    # a cancelled job accepts nothing more
    reason, _, _ = await fails(lambda: stub.CancelJob(pb.CancelJobRequest(job_id=job.job_id),
                                                      metadata=md), PRECONDITION)
    assert reason == "JOB_ALREADY_ENDED"
    reason, _, _ = await fails(lambda: add(stub, md, job.job_id, [text_request("late")]),
                               PRECONDITION)
    assert reason == "JOB_NOT_OPEN"
    reason, _, _ = await fails(lambda: stub.SubmitJob(pb.SubmitJobRequest(job_id=job.job_id),
                                                      metadata=md), PRECONDITION)
    assert reason == "JOB_CANCELLED"
    watched = [e async for e in stub.WatchJob(pb.WatchJobRequest(job_id=job.job_id),
                                              metadata=md, timeout=30)]
    assert Counter(e.event_type for e in watched)[pb.JOB_EVENT_TYPE_REQUEST_CANCELLED] == 3
    assert watched[-1].state == pb.JOB_STATE_CANCELLED


def slow_in_flight_sync(fake, tag: str) -> int:  # type: ignore[no-untyped-def]
    return sum(1 for text, _ in prompts_of(fake) if f"slow {tag}" in text)


@pytest.mark.parametrize("requests", [0, 3])
async def test_cancel_before_submit(stub, requests: int) -> None:
    md = project()
    job = await create(stub, md)
    ids = [f"x{i}" for i in range(requests)]
    if ids:
        await add(stub, md, job.job_id, [text_request(i) for i in ids])
    cancelled = (await stub.CancelJob(pb.CancelJobRequest(job_id=job.job_id), metadata=md)).job
    assert cancelled.state == pb.JOB_STATE_CANCELLED
    found, final = await results(stub, md, job.job_id)
    check_complete(final, found, ids)
    assert all(r.state == pb.REQUEST_STATE_CANCELLED for r in found)


# --- listing ------------------------------------------------------------------------------------

async def test_list_jobs_pages_and_filters(stub) -> None:
    md = project()
    made = [await create(stub, md, job_type="odd" if i % 2 else "even") for i in range(7)]
    await add(stub, md, made[0].job_id, [text_request("a")])
    page = (await stub.ListJobs(pb.ListJobsRequest(limit=3), metadata=md)).items
    assert [j.job_id for j in page] == [j.job_id for j in reversed(made)][:3]
    collected, token = [], ""
    while True:
        reply = await stub.ListJobs(pb.ListJobsRequest(limit=2, page_token=token), metadata=md)
        assert reply.total == 7
        collected += [j.job_id for j in reply.items]
        token = reply.next_page_token
        if not token:
            break
    assert collected == [j.job_id for j in reversed(made)]
    odd = await stub.ListJobs(pb.ListJobsRequest(job_type="odd"), metadata=md)
    assert odd.total == 3 and {j.job_type for j in odd.items} == {"odd"}
    populating = await stub.ListJobs(pb.ListJobsRequest(state=pb.JOB_STATE_POPULATING),
                                     metadata=md)
    assert [j.job_id for j in populating.items] == [made[0].job_id]
    skipped = await stub.ListJobs(pb.ListJobsRequest(offset=5), metadata=md)
    assert [j.job_id for j in skipped.items] == [made[1].job_id, made[0].job_id]
    # another project sees none of them
    assert (await stub.ListJobs(pb.ListJobsRequest(), metadata=project())).total == 0
    # a token must be used with the filters it was made for
    first = await stub.ListJobs(pb.ListJobsRequest(limit=1, job_type="odd"), metadata=md)
    reason, _, fields = await fails(lambda: stub.ListJobs(
        pb.ListJobsRequest(limit=1, page_token=first.next_page_token), metadata=md), INVALID)
    assert (reason, fields) == ("INVALID_PAGE_TOKEN", ["page_token"])


# --- idempotency --------------------------------------------------------------------------------

async def test_idempotency_key_returns_the_same_job(stub) -> None:
    md = project()
    key = uuid.uuid4().hex
    first = await create(stub, md, idempotency_key=key, job_type="t")
    again = await create(stub, md, idempotency_key=key, job_type="t")
    assert again.job_id == first.job_id
    other_project = await create(stub, project(), idempotency_key=key, job_type="t")
    assert other_project.job_id != first.job_id
    reason, meta, fields = await fails(lambda: create(stub, md, idempotency_key=key,
                                                      job_type="other"), INVALID)
    assert (reason, fields, meta["jobId"]) == ("IDEMPOTENCY_KEY_REUSED", ["idempotency_key"],
                                               first.job_id)
    assert (await stub.ListJobs(pb.ListJobsRequest(), metadata=md)).total == 1


# --- bad input, every RPC -----------------------------------------------------------------------

@pytest.mark.parametrize(("fields", "code", "reason", "field"), [
    ({"temperature": -0.1}, INVALID, "INVALID_ARGUMENT", "temperature"),
    ({"temperature": 2.01}, INVALID, "INVALID_ARGUMENT", "temperature"),
    ({"max_output_tokens": 0}, INVALID, "INVALID_ARGUMENT", "max_output_tokens"),
    ({"max_output_tokens": 10**8}, INVALID, "INVALID_ARGUMENT", "max_output_tokens"),
    ({"max_batch_size": 101}, INVALID, "INVALID_ARGUMENT", "max_batch_size"),
    ({"max_batch_size": -1}, INVALID, "INVALID_ARGUMENT", "max_batch_size"),
    ({"job_type": "x" * 201}, INVALID, "INVALID_ARGUMENT", "job_type"),
    ({"idempotency_key": "k" * 201}, INVALID, "INVALID_ARGUMENT", "idempotency_key"),
    ({"model": "nope/nothing"}, NOT_FOUND, "MODEL_NOT_FOUND", None),
    ({"model": "fake/embed"}, INVALID, "MODEL_CAPABILITY_MISSING", "model"),
])
async def test_create_job_refuses_bad_input(stub, fields, code, reason, field) -> None:
    md = project()
    got_reason, _, got_fields = await fails(lambda: create(stub, md, **fields), code)
    assert got_reason == reason
    if field:
        assert field in got_fields
    assert (await stub.ListJobs(pb.ListJobsRequest(), metadata=md)).total == 0


def _request_cases() -> list[tuple[str, list[pb.BatchRequest], grpc.StatusCode, str, str]]:
    schema_bad = text_request("s", output_schema={"type": "nope"})
    return [
        ("space in id", [text_request("a b")], INVALID, "INVALID_ARGUMENT",
         "requests[0].request_id"),
        ("empty id", [text_request("")], INVALID, "INVALID_ARGUMENT", "requests[0].request_id"),
        ("long id", [text_request("x" * 65)], INVALID, "INVALID_ARGUMENT",
         "requests[0].request_id"),
        ("no requests", [], INVALID, "INVALID_ARGUMENT", "requests"),
        ("too many", [text_request(f"r{i}") for i in range(101)], INVALID, "INVALID_ARGUMENT",
         "requests"),
        ("no parts", [pb.BatchRequest(request_id="e")], INVALID, "INVALID_ARGUMENT",
         "requests[0].content_parts"),
        ("empty part", [pb.BatchRequest(request_id="e", content_parts=[pb.ContentPart()])],
         INVALID, "INVALID_ARGUMENT", "requests[0].content_parts[0]"),
        ("bad schema", [text_request("ok"), schema_bad], INVALID, "INVALID_OUTPUT_SCHEMA",
         "requests[1].output_schema"),
        ("bad schema name", [text_request("n", output_schema={"type": "object"},
                                          output_schema_name="no spaces")],
         INVALID, "INVALID_ARGUMENT", "requests[0].output_schema_name"),
        ("ftp image", [pb.BatchRequest(request_id="i", content_parts=[pb.ContentPart(
            image=pb.ImagePart(uri="ftp://x/y.png"))])], INVALID, "INVALID_ARGUMENT",
         "requests[0].content_parts[0].image.uri"),
        ("not an image type", [pb.BatchRequest(request_id="i", content_parts=[pb.ContentPart(
            image=pb.ImagePart(uri="https://x/y.png", content_type="text/plain"))])],
         INVALID, "INVALID_ARGUMENT", "requests[0].content_parts[0].image.content_type"),
        ("malformed file uri", [pb.BatchRequest(request_id="i", content_parts=[pb.ContentPart(
            image=pb.ImagePart(uri="file://"))])], INVALID, "INVALID_FILE_URI",
         "requests[0].content_parts[0].image.uri"),
        ("duplicate in call", [text_request("d"), text_request("e"), text_request("d")],
         EXISTS, "DUPLICATE_REQUEST_ID", ""),
    ]


@pytest.mark.parametrize(("name", "requests", "code", "reason", "field"), _request_cases(),
                         ids=[c[0] for c in _request_cases()])
async def test_add_requests_refuses_bad_input_and_adds_nothing(stub, name, requests, code,
                                                               reason, field) -> None:
    md = project()
    job = await create(stub, md)
    await add(stub, md, job.job_id, [text_request("existing")])
    got_reason, _, fields = await fails(lambda: add(stub, md, job.job_id, requests), code)
    assert got_reason == reason
    if field:
        assert field in fields
    after = await get_job(stub, md, job.job_id)
    assert after.metrics.total_requests == 1 and after.state == pb.JOB_STATE_POPULATING


async def test_add_requests_duplicate_of_the_job_and_unknown_files(stub) -> None:
    md = project()
    job = await create(stub, md)
    await add(stub, md, job.job_id, [text_request("taken")])
    reason, meta, _ = await fails(lambda: add(stub, md, job.job_id, [
        text_request("new_one"), text_request("taken")]), EXISTS)
    assert (reason, meta["requestId"]) == ("DUPLICATE_REQUEST_ID", "taken")
    missing = f"file://{md[0][1]}/0123456789abcdef0123456789abcdef/x.png"
    reason, _, _ = await fails(lambda: add(stub, md, job.job_id, [pb.BatchRequest(
        request_id="img", content_parts=[pb.ContentPart(image=pb.ImagePart(uri=missing))])]),
        NOT_FOUND)
    assert reason == "FILE_NOT_FOUND"
    after = await get_job(stub, md, job.job_id)
    assert after.metrics.total_requests == 1
    await fails(lambda: stub.GetRequest(pb.GetRequestRequest(job_id=job.job_id,
                                                             request_id="new_one"),
                                        metadata=md), NOT_FOUND)


async def test_a_32_mb_request_fits_and_a_larger_one_does_not(stub, server) -> None:
    md = project()
    job = await create(stub, md)
    big = "a" * (32 * MiB - 1000)
    reply = await add(stub, md, job.job_id, [text_request("big", big)])
    assert reply.total_requests == 1
    _, _, fields = await fails(lambda: add(stub, md, job.job_id, [
        text_request("too_big", big + "b" * 2000)]), INVALID)
    assert fields == ["requests[0]"]
    options = [("grpc.max_receive_message_length", 40 * MiB)]
    async with grpc.aio.insecure_channel(server.address, options=options) as big_channel:
        stored = await batch_job_service_pb2_grpc.BatchJobServiceStub(big_channel).GetRequest(
            pb.GetRequestRequest(job_id=job.job_id, request_id="big"), metadata=md, timeout=60)
    assert len(stored.request.content_parts[0].text) == len(big)
    assert (await get_job(stub, md, job.job_id)).metrics.total_requests == 1


def _every_job_rpc(stub, job_id: str, who) -> list:  # type: ignore[no-untyped-def]
    return [
        lambda: stub.GetJob(pb.GetJobRequest(job_id=job_id), metadata=who),
        lambda: add(stub, who, job_id, [text_request("b")]),
        lambda: stub.SubmitJob(pb.SubmitJobRequest(job_id=job_id), metadata=who),
        lambda: stub.CancelJob(pb.CancelJobRequest(job_id=job_id), metadata=who),
        lambda: stub.GetRequest(pb.GetRequestRequest(job_id=job_id, request_id="a"),
                                metadata=who),
        lambda: stub.StreamResults(pb.StreamResultsRequest(job_id=job_id), metadata=who),
        lambda: stub.WatchJob(pb.WatchJobRequest(job_id=job_id), metadata=who),
    ]


async def test_unknown_and_foreign_jobs_are_not_found_on_every_rpc(stub) -> None:
    md, other = project(), project()
    job = await create(stub, md)
    await add(stub, md, job.job_id, [text_request("a")])
    for job_id, who in (("job_doesnotexist", md), (job.job_id, other), ("", md)):
        calls = _every_job_rpc(stub, job_id, who)
        for call in calls:
            reason, _, _ = await fails(call, NOT_FOUND)
            assert reason == "JOB_NOT_FOUND"
    after = await get_job(stub, md, job.job_id)
    assert after.state == pb.JOB_STATE_POPULATING and after.metrics.total_requests == 1
    reason, _, _ = await fails(lambda: stub.GetRequest(pb.GetRequestRequest(
        job_id=job.job_id, request_id="zzz"), metadata=md), NOT_FOUND)
    assert reason == "REQUEST_NOT_FOUND"


async def test_submit_rules(stub) -> None:
    md = project()
    job = await create(stub, md)
    reason, _, _ = await fails(lambda: stub.SubmitJob(pb.SubmitJobRequest(job_id=job.job_id),
                                                      metadata=md), PRECONDITION)
    assert reason == "JOB_EMPTY"
    assert (await get_job(stub, md, job.job_id)).state == pb.JOB_STATE_CREATED
    await add(stub, md, job.job_id, [text_request("a")])
    await stub.SubmitJob(pb.SubmitJobRequest(job_id=job.job_id), metadata=md)
    reason, meta, _ = await fails(lambda: add(stub, md, job.job_id, [text_request("b")]),
                                  PRECONDITION)
    assert reason == "JOB_NOT_OPEN" and meta["state"] in ("ready", "processing", "succeeded")
    _, final = await results(stub, md, job.job_id)
    assert final.metrics.total_requests == 1


@pytest.mark.parametrize(("request_", "field"), [
    (pb.ListJobsRequest(limit=101), "limit"),
    (pb.ListJobsRequest(limit=-1), "limit"),
    (pb.ListJobsRequest(offset=-1), "offset"),
    (pb.ListJobsRequest(state=99), "state"),  # type: ignore[arg-type]
    (pb.ListJobsRequest(page_token="not-a-token"), "page_token"),
])
async def test_list_jobs_refuses_bad_input(stub, request_, field) -> None:
    _, _, fields = await fails(lambda: stub.ListJobs(request_, metadata=project()), INVALID)
    assert fields == [field]


async def test_streams_refuse_a_negative_cursor(stub) -> None:
    md = project()
    job = await create(stub, md)
    for call in (lambda: stub.StreamResults(pb.StreamResultsRequest(job_id=job.job_id,
                                                                    cursor=-1), metadata=md),
                 lambda: stub.WatchJob(pb.WatchJobRequest(job_id=job.job_id, cursor=-1),
                                       metadata=md)):
        _, _, fields = await fails(call, INVALID)
        assert fields == ["cursor"]


# --- StreamAddRequests --------------------------------------------------------------------------

def _stream_messages(job_id: str, batches: list[list[pb.BatchRequest]], ids: list[str] | None
                     = None) -> list[pb.StreamAddRequestsRequest]:
    return [pb.StreamAddRequestsRequest(job_id=(ids[i] if ids else (job_id if i == 0 else "")),
                                        requests=batch) for i, batch in enumerate(batches)]


def _blocking_stream(address: str, messages: list[pb.StreamAddRequestsRequest], md
                     ) -> pb.StreamAddRequestsResponse | grpc.RpcError:
    # the blocking stub reports a status that arrives while the client is still sending (the
    # asyncio one may turn it into INTERNAL, grpc/grpc#36066)
    with grpc.insecure_channel(address) as ch:
        try:
            return batch_job_service_pb2_grpc.BatchJobServiceStub(ch).StreamAddRequests(
                iter(messages), metadata=md, timeout=60)
        except grpc.RpcError as err:
            return err


async def test_stream_add_requests_takes_any_number(stub, server) -> None:
    md = project()
    job = await create(stub, md)
    batches = [[text_request(f"s{b}_{i}") for i in range(100)] for b in range(3)]
    batches.append([text_request("last")])
    reply = await asyncio.to_thread(_blocking_stream, server.address,
                                    _stream_messages(job.job_id, batches), md)
    assert (reply.added_count, reply.total_requests) == (301, 301)
    await stub.SubmitJob(pb.SubmitJobRequest(job_id=job.job_id), metadata=md)
    found, final = await results(stub, md, job.job_id)
    check_complete(final, found, [r.request_id for b in batches for r in b])


@pytest.mark.parametrize("problem", ["duplicate", "bad_id", "other_job", "no_job_id"])
async def test_stream_add_requests_is_all_or_nothing(stub, server, problem: str) -> None:
    md = project()
    job = await create(stub, md)
    await add(stub, md, job.job_id, [text_request("before")])
    batches = [[text_request(f"ok{b}_{i}") for i in range(50)] for b in range(2)]
    ids = None
    expected = INVALID
    if problem == "duplicate":
        batches.append([text_request("x"), text_request("ok0_3")])
        expected = EXISTS
    elif problem == "bad_id":
        batches.append([text_request("bad id")])
    elif problem == "other_job":
        ids = [job.job_id, "", "job_other"]
        batches.append([text_request("y")])
    else:
        ids = ["", "", ""]
        batches.append([text_request("y")])
    err = await asyncio.to_thread(_blocking_stream, server.address,
                                  _stream_messages(job.job_id, batches, ids), md)
    assert isinstance(err, grpc.RpcError) and err.code() == expected, err
    after = await get_job(stub, md, job.job_id)
    assert after.metrics.total_requests == 1 and after.state == pb.JOB_STATE_POPULATING
    for request_id in ("ok0_0", "ok1_49"):
        await fails(lambda rid=request_id: stub.GetRequest(
            pb.GetRequestRequest(job_id=job.job_id, request_id=rid), metadata=md), NOT_FOUND)


async def test_a_failed_stream_into_a_new_job_leaves_it_created(stub, server) -> None:
    md = project()
    job = await create(stub, md)
    batches = [[text_request("a")], [text_request("a")]]
    err = await asyncio.to_thread(_blocking_stream, server.address,
                                  _stream_messages(job.job_id, batches), md)
    assert isinstance(err, grpc.RpcError) and err.code() == EXISTS
    assert error_details(err)[1]["message"] == "1"  # the second message was refused
    after = await get_job(stub, md, job.job_id)
    assert after.state == pb.JOB_STATE_CREATED and after.metrics.total_requests == 0
    found, now = await results(stub, md, job.job_id, follow=False, timeout=10)
    assert found == [] and now.state == pb.JOB_STATE_CREATED


async def test_a_file_an_open_job_needs_cannot_be_deleted(stub, channel) -> None:
    md = project()
    files = file_service_pb2_grpc.FileServiceStub(channel)
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (0, 200, 0)).save(buffer, "PNG")

    def upload():  # type: ignore[no-untyped-def]
        yield file_service_pb2.UploadFileRequest(metadata=file_service_pb2.FileMetadata(
            name="green.png", content_type="image/png"))
        yield file_service_pb2.UploadFileRequest(chunk=buffer.getvalue())

    uri = (await files.UploadFile(upload(), metadata=md)).file.uri
    job = await create(stub, md)
    await add(stub, md, job.job_id, [pb.BatchRequest(request_id="g", content_parts=[
        pb.ContentPart(text="What colour?"), pb.ContentPart(image=pb.ImagePart(uri=uri))])])
    reason, meta, _ = await fails(lambda: files.DeleteFile(
        file_service_pb2.DeleteFileRequest(uri=uri), metadata=md), PRECONDITION)
    assert reason == "FILE_IN_USE" and job.job_id in meta["tables"]
    await stub.SubmitJob(pb.SubmitJobRequest(job_id=job.job_id), metadata=md)
    found, final = await results(stub, md, job.job_id)
    assert final.state == pb.JOB_STATE_SUCCEEDED, found[0].error
    await files.DeleteFile(file_service_pb2.DeleteFileRequest(uri=uri), metadata=md)  # now free
