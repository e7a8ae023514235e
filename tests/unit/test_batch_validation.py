"""Checks of batch job parameters and requests."""

from __future__ import annotations

import pytest

from rowforge.server.batch.model import ContentPart, JobConfig, RequestInput
from rowforge.server.batch.validation import (
    MAX_REQUEST_BYTES,
    check_job_config,
    check_requests,
    check_schema,
    request_size,
)
from rowforge.server.errors import AlreadyExists, InvalidArgument
from rowforge.server.providers import ModelSpec

CHAT = ModelSpec(id="c", route="openai/c", capabilities=frozenset({"chat", "image"}),
                 context_length=8192)
TEXT_ONLY = ModelSpec(id="t", route="openai/t", capabilities=frozenset({"chat"}))


def req(request_id: str = "r1", *parts: ContentPart, **kw) -> RequestInput:  # type: ignore[no-untyped-def]
    return RequestInput(request_id, parts or (ContentPart(text="hello"),), **kw)


def fields(exc: pytest.ExceptionInfo[InvalidArgument]) -> list[str]:
    return [v.field for v in exc.value.field_violations]


@pytest.mark.parametrize("request_id", ["a", "A-b_9", "x" * 64])
def test_good_request_ids(request_id: str) -> None:
    check_requests([req(request_id)], CHAT)


@pytest.mark.parametrize("request_id", ["", "a b", "x" * 65, "é", "a/b", "a.b", "a\n"])
def test_bad_request_ids(request_id: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        check_requests([req(request_id)], CHAT)
    assert fields(exc) == ["requests[0].request_id"]


def test_batch_size_limits() -> None:
    check_requests([req(f"r{i}") for i in range(100)], CHAT)
    for n in (0, 101):
        with pytest.raises(InvalidArgument) as exc:
            check_requests([req(f"r{i}") for i in range(n)], CHAT)
        assert fields(exc) == ["requests"]


def test_duplicates_within_a_call_are_already_exists() -> None:
    with pytest.raises(AlreadyExists) as exc:
        check_requests([req("a"), req("b"), req("a")], CHAT)
    assert exc.value.reason == "DUPLICATE_REQUEST_ID" and exc.value.metadata == {"requestId": "a"}


def test_every_bad_field_is_reported_together() -> None:
    bad = [req("ok"), RequestInput("no parts", ()),
           req("img", ContentPart(image_uri="ftp://x"), ContentPart(image_uri="https://x/y",
                                                                    content_type="text/html"))]
    with pytest.raises(InvalidArgument) as exc:
        check_requests(bad, CHAT)
    assert fields(exc) == ["requests[1].request_id", "requests[1].content_parts",
                           "requests[2].content_parts[0].image.uri",
                           "requests[2].content_parts[1].image.content_type"]


def test_images_need_a_model_that_takes_images() -> None:
    check_requests([req("i", ContentPart(image_uri="https://x/y.png"))], CHAT)
    with pytest.raises(InvalidArgument) as exc:
        check_requests([req("i", ContentPart(image_uri="https://x/y.png"))], TEXT_ONLY)
    assert fields(exc) == ["requests[0].content_parts[0].image"]


def test_schemas_are_checked() -> None:
    check_requests([req(output_schema={"type": "object"}, output_schema_name="My_Model-1")],
                   CHAT)
    with pytest.raises(InvalidArgument) as exc:
        check_requests([req(output_schema={"type": "nope"})], CHAT)
    assert exc.value.reason == "INVALID_OUTPUT_SCHEMA"
    assert fields(exc) == ["requests[0].output_schema"]
    with pytest.raises(InvalidArgument) as exc:
        check_schema({"properties": {"a": {"minLength": "three"}}}, "s")
    assert fields(exc) == ["s"]
    with pytest.raises(InvalidArgument) as exc:
        check_requests([req(output_schema={"type": "object"}, output_schema_name="a b")], CHAT)
    assert fields(exc) == ["requests[0].output_schema_name"]


def test_request_size_limit_counts_text_schema_and_metadata() -> None:
    room = MAX_REQUEST_BYTES - request_size(req("r", ContentPart(text="")))
    check_requests([req("r", ContentPart(text="a" * room))], CHAT)
    with pytest.raises(InvalidArgument) as exc:
        check_requests([req("r", ContentPart(text="a" * (room + 1)))], CHAT)
    assert fields(exc) == ["requests[0]"]
    # multi-byte text counts in bytes, metadata counts too
    assert request_size(req("r", ContentPart(text="é"))) == request_size(
        req("r", ContentPart(text="ab")))
    assert request_size(req(metadata={"k": "v" * 100})) > 100


@pytest.mark.parametrize(("changes", "field"), [
    ({"temperature": -0.01}, "temperature"),
    ({"temperature": 2.01}, "temperature"),
    ({"temperature": float("nan")}, "temperature"),
    ({"max_output_tokens": 0}, "max_output_tokens"),
    ({"max_output_tokens": 8193}, "max_output_tokens"),
    ({"max_batch_size": 0}, "max_batch_size"),
    ({"max_batch_size": 101}, "max_batch_size"),
    ({"job_type": "j" * 201}, "job_type"),
    ({"system_instruction": "s" * (1024 * 1024 + 1)}, "system_instruction"),
    ({"metadata": {"k": "v" * (1024 * 1024)}}, "metadata"),
])
def test_bad_job_parameters(changes: dict, field: str) -> None:  # type: ignore[type-arg]
    config = JobConfig(model="c", **changes)
    with pytest.raises(InvalidArgument) as exc:
        check_job_config(config, CHAT)
    assert fields(exc) == [field]


def test_good_job_parameters_and_key_length() -> None:
    check_job_config(JobConfig(model="c", temperature=0.0, max_output_tokens=8192,
                               max_batch_size=100), CHAT)
    check_job_config(JobConfig(model="c", temperature=2.0, max_batch_size=1), CHAT, "k" * 200)
    with pytest.raises(InvalidArgument) as exc:
        check_job_config(JobConfig(model="c"), CHAT, "k" * 201)
    assert fields(exc) == ["idempotency_key"]


def test_a_refusal_names_every_invalid_request() -> None:
    requests = [req(f"r{i}") for i in range(100)]
    requests[3] = req("bad id")
    requests[40] = req("r40", output_schema={"type": "nonsense"})
    requests[99] = req("r99", ContentPart(image_uri="ftp://x"))
    with pytest.raises(InvalidArgument) as exc:
        check_requests(requests, CHAT)
    assert int(exc.value.metadata["invalidRequestMask"], 16) == (1 << 3) | (1 << 40) | (1 << 99)
    assert exc.value.metadata["invalidRequestIds"] == '["bad id", "r40", "r99"]'
    assert fields(exc) == ["requests[3].request_id", "requests[40].output_schema",
                           "requests[99].content_parts[0].image.uri"]
    # schema errors alone keep their own reason
    with pytest.raises(InvalidArgument) as exc:
        check_requests([req("a"), req("b", output_schema={"type": 5})], CHAT)
    assert exc.value.reason == "INVALID_OUTPUT_SCHEMA"
    assert exc.value.metadata["invalidRequestMask"] == "2"
