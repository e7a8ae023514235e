"""Response formats (OpenAI's ``response_format``) and checking structured output."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import jsonschema
import jsonschema.validators

from rowforge.server.errors import FailedPrecondition, InvalidArgument, Unavailable

FORMAT_TYPES = ("text", "json_object", "json_schema")
_FENCE = re.compile(r"^\s*```(?:json)?\s*\n?(.*?)\n?```\s*$", re.DOTALL | re.IGNORECASE)


def json_schema_format(schema: Mapping[str, Any] | type, *, name: str | None = None,
                       strict: bool = True) -> dict[str, Any]:
    """A ``json_schema`` response format from a JSON Schema dict or a Pydantic model class."""
    if isinstance(schema, type):
        model_json_schema = getattr(schema, "model_json_schema", None)
        if model_json_schema is None:
            raise TypeError("expected a JSON Schema dict or a Pydantic model class")
        name = name or schema.__name__
        body: dict[str, Any] = model_json_schema()
    else:
        body = dict(schema)
    return {"type": "json_schema",
            "json_schema": {"name": name or "response", "schema": body, "strict": strict}}


def schema_of(response_format: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """The JSON Schema inside a ``json_schema`` response format, else ``None``."""
    if not response_format or response_format.get("type") != "json_schema":
        return None
    spec = response_format.get("json_schema") or {}
    schema = spec.get("schema") if isinstance(spec, Mapping) else None
    return schema if isinstance(schema, Mapping) else None


def validate_response_format(response_format: Any) -> None:
    """Raise ``InvalidArgument`` unless ``response_format`` is usable (schema checked too)."""
    if response_format is None:
        return
    if not isinstance(response_format, Mapping):
        raise InvalidArgument.field("response_format", "must be an object with a type")
    kind = response_format.get("type")
    if kind not in FORMAT_TYPES:
        raise InvalidArgument.field("response_format.type",
                                    f"must be one of {', '.join(FORMAT_TYPES)}")
    if kind != "json_schema":
        return
    spec = response_format.get("json_schema")
    if not isinstance(spec, Mapping) or not isinstance(spec.get("schema"), Mapping):
        raise InvalidArgument.field("response_format.json_schema.schema",
                                    "is required for a json_schema response format")
    try:
        _validator(_key(spec["schema"]))
    except jsonschema.SchemaError as exc:
        raise InvalidArgument.field("response_format.json_schema.schema",
                                    f"is not a valid JSON Schema: {exc.message}") from None


def parse_json_output(text: str, response_format: Mapping[str, Any] | None, *,
                      finish_reason: str | None = None,
                      stop: Sequence[str] | str | None = None) -> Any:
    """Decode (and for ``json_schema``, validate) a model's structured answer.

    Returns ``None`` when no JSON format was asked for. A Markdown code fence around the JSON
    is tolerated.

    Raises:
        Unavailable: reason ``OUTPUT_SCHEMA_MISMATCH`` (retryable: another sample may be fine)
            when the text is not JSON or does not match the schema.
        FailedPrecondition: reason ``OUTPUT_TRUNCATED`` (not retryable: the same request cuts
            the answer again) when the invalid answer ended at ``max_tokens``
            (``finish_reason == "length"``) or the request has ``stop`` sequences.
    """
    try:
        return _parse_json_output(text, response_format)
    except Unavailable as exc:
        if finish_reason == "length":
            cause = "it reached max_tokens before the JSON was complete: raise max_tokens"
        elif stop:
            cause = ("the request has stop sequences, which cut structured output wherever "
                     "they occur in the JSON: remove stop")
        else:
            raise
        raise FailedPrecondition(f"{exc.message.removesuffix(' Retrying may help.')} "
                                 f"({cause})", reason="OUTPUT_TRUNCATED") from None


def _parse_json_output(text: str, response_format: Mapping[str, Any] | None) -> Any:
    if not response_format or response_format.get("type") not in ("json_object", "json_schema"):
        return None
    fenced = _FENCE.match(text)
    body = fenced.group(1) if fenced else text
    try:
        value = json.loads(body)
    except json.JSONDecodeError as exc:
        raise _mismatch(f"the answer is not valid JSON ({exc.msg} at position {exc.pos})"
                        ) from None
    schema = schema_of(response_format)
    if schema is None:
        if not isinstance(value, dict):
            raise _mismatch("the answer is not a JSON object")
        return value
    error = jsonschema.exceptions.best_match(_validator(_key(schema)).iter_errors(value))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        raise _mismatch(f"the answer does not match the schema at {where}: {error.message}"[:500])
    return value


def _mismatch(detail: str) -> Unavailable:
    return Unavailable(f"The model's structured output is invalid: {detail}. Retrying may help.",
                       reason="OUTPUT_SCHEMA_MISMATCH")


def _key(schema: Mapping[str, Any]) -> str:
    return json.dumps(schema, sort_keys=True, default=str)


@functools.lru_cache(maxsize=256)
def _validator(schema_json: str) -> Any:
    """A checked validator per schema (cached: batch jobs reuse one schema many times)."""
    schema = json.loads(schema_json)
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)
