"""Structured output that fails validation: retryable when another sample may pass, not when
the request itself cuts the answer (stop sequences, max_tokens)."""

from __future__ import annotations

import pytest

from rowforge.server.errors import FailedPrecondition, Unavailable
from rowforge.server.providers import is_retryable, parse_json_output

SCHEMA = {"type": "json_schema",
          "json_schema": {"name": "r", "schema": {"type": "object", "required": ["a"]}}}


def test_valid_output_is_parsed_whatever_the_stop_sequences() -> None:
    assert parse_json_output('{"a": 1}', SCHEMA, stop=[" "]) == {"a": 1}
    assert parse_json_output("no format asked", None, finish_reason="length") is None


def test_a_bad_sample_is_retryable() -> None:
    with pytest.raises(Unavailable) as exc:
        parse_json_output('{"b": 1}', SCHEMA, finish_reason="stop")
    assert exc.value.reason == "OUTPUT_SCHEMA_MISMATCH" and is_retryable(exc.value)


@pytest.mark.parametrize("text, finish_reason, stop, cause", [
    ('{"a":', "stop", [" "], "remove stop"),  # cut at the first space
    ('{"a": [1, 2', "length", None, "raise max_tokens"),
    ("not json", "stop", "END", "remove stop"),
])
def test_an_answer_the_request_cuts_is_not_retryable(text: str, finish_reason: str,
                                                     stop: list[str] | str | None,
                                                     cause: str) -> None:
    with pytest.raises(FailedPrecondition) as exc:
        parse_json_output(text, SCHEMA, finish_reason=finish_reason, stop=stop)
    assert exc.value.reason == "OUTPUT_TRUNCATED"
    assert cause in exc.value.message and "Retrying may help" not in exc.value.message
    assert not is_retryable(exc.value) and exc.value.retry_after is None
