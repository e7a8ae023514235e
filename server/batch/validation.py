"""Checks of what callers send: job parameters and requests (limits from the batch seed)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

import jsonschema
import jsonschema.validators

from rowforge.server.batch.model import JobConfig, RequestInput
from rowforge.server.errors import AlreadyExists, InvalidArgument, Violations
from rowforge.server.providers import ModelSpec

MiB = 1024 * 1024

REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
SCHEMA_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_REQUESTS_PER_CALL = 100
MAX_REQUEST_BYTES = 32 * MiB
MAX_BATCH_SIZE = 100
DEFAULT_BATCH_SIZE = 20
DEFAULT_TEMPERATURE = 0.5
DEFAULT_MAX_OUTPUT_TOKENS = 1024
MAX_TEMPERATURE = 2.0
MAX_JOB_TYPE_CHARS = 200
MAX_IDEMPOTENCY_KEY_CHARS = 200
MAX_SYSTEM_INSTRUCTION_BYTES = MiB
MAX_JOB_METADATA_BYTES = MiB
IMAGE_SCHEMES = ("file://", "http://", "https://")


def _json_size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()) \
        if value is not None else 0


def check_job_config(config: JobConfig, spec: ModelSpec, idempotency_key: str = "") -> None:
    """Validate CreateJob's parameters against the limits and the model.

    Raises:
        InvalidArgument: naming every bad field.
    """
    v = Violations()
    v.check(0.0 <= config.temperature <= MAX_TEMPERATURE, "temperature",
            f"must be between 0 and {MAX_TEMPERATURE:g}")
    v.check(1 <= config.max_output_tokens <= spec.context_length, "max_output_tokens",
            f"must be between 1 and the model's context length ({spec.context_length})")
    v.check(1 <= config.max_batch_size <= MAX_BATCH_SIZE, "max_batch_size",
            f"must be between 1 and {MAX_BATCH_SIZE} (0: {DEFAULT_BATCH_SIZE})")
    v.check(len(config.job_type) <= MAX_JOB_TYPE_CHARS, "job_type",
            f"must be at most {MAX_JOB_TYPE_CHARS} characters")
    v.check(not config.job_type.startswith("rowforge.table/"), "job_type",
            "must not start with 'rowforge.table/' (reserved for table jobs)")
    v.check(len(config.system_instruction.encode()) <= MAX_SYSTEM_INSTRUCTION_BYTES,
            "system_instruction", f"must be at most {MAX_SYSTEM_INSTRUCTION_BYTES} bytes")
    v.check(_json_size(config.metadata) <= MAX_JOB_METADATA_BYTES, "metadata",
            f"must be at most {MAX_JOB_METADATA_BYTES} bytes as JSON")
    v.check(len(idempotency_key) <= MAX_IDEMPOTENCY_KEY_CHARS, "idempotency_key",
            f"must be at most {MAX_IDEMPOTENCY_KEY_CHARS} characters")
    v.raise_if_any()


def check_schema(schema: dict[str, Any], field: str) -> None:
    """Raise ``InvalidArgument`` on ``field`` unless ``schema`` is a valid JSON Schema."""
    try:
        cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise InvalidArgument.field(field, f"is not a valid JSON Schema: {exc.message}"[:500],
                                    reason="INVALID_OUTPUT_SCHEMA") from None


def request_size(request: RequestInput) -> int:
    """Bytes a request occupies: its texts, URIs, schema and metadata."""
    size = len(request.request_id) + len(request.output_schema_name)
    for part in request.parts:
        size += len((part.text or "").encode()) + len((part.image_uri or "").encode())
    return size + _json_size(request.output_schema) + _json_size(request.metadata)


def check_requests(requests: Sequence[RequestInput], spec: ModelSpec,
                   field: str = "requests") -> None:
    """Validate one AddRequests batch (1 to 100 requests) for a job of model ``spec``.

    A batch is accepted or refused whole. A refusal lists every violation of every invalid
    request (fields ``requests[i]...``; details are capped, see :mod:`status`), and its
    ErrorInfo metadata names the invalid requests: ``invalidRequestMask`` (hex, bit ``i`` set
    for ``requests[i]``: at most 25 digits, never clipped) and ``invalidRequestIds`` (a JSON
    list, clipped like every echoed value), so a client can send the valid ones again.

    Raises:
        InvalidArgument: malformed requests, or a batch size out of range.
        AlreadyExists: a request_id repeated within the batch (``DUPLICATE_REQUEST_ID``).
    """
    v = Violations()
    v.check(1 <= len(requests) <= MAX_REQUESTS_PER_CALL, field,
            f"must hold 1 to {MAX_REQUESTS_PER_CALL} requests ({len(requests)} sent)")
    v.raise_if_any()
    invalid: list[int] = []
    for i, request in enumerate(requests):
        before = len(v.items)
        _check_request(v, request, spec, f"{field}[{i}]")
        if len(v.items) > before:
            invalid.append(i)
    schema_only = all(item.field.endswith(".output_schema") for item in v.items)
    raise_for_requests(v, requests, invalid,
                       reason="INVALID_OUTPUT_SCHEMA" if schema_only else None)
    seen: set[str] = set()
    for request in requests:
        if request.request_id in seen:
            raise AlreadyExists(f"request_id {request.request_id!r} appears twice in this call",
                                reason="DUPLICATE_REQUEST_ID",
                                metadata={"requestId": request.request_id},
                                resource_type="batch_request",
                                resource_name=request.request_id)
        seen.add(request.request_id)


def raise_for_requests(v: Violations, requests: Sequence[RequestInput],
                       invalid: Sequence[int], *, reason: str | None = None) -> None:
    """Raise ``v``'s violations naming the ``invalid`` requests (see :func:`check_requests`)."""
    if not v.items:
        return
    message = "; ".join(f"{item.field}: {item.description}" for item in v.items)
    mask = sum(1 << i for i in invalid)
    metadata = {"invalidRequestMask": f"{mask:x}",
                "invalidRequestIds": json.dumps([requests[i].request_id[:64] for i in invalid])}
    if reason:
        raise InvalidArgument(message, field_violations=v.items, metadata=metadata,
                              reason=reason)
    raise InvalidArgument(message, field_violations=v.items, metadata=metadata)


def _check_request(v: Violations, request: RequestInput, spec: ModelSpec, where: str) -> None:
    v.check(bool(REQUEST_ID_RE.fullmatch(request.request_id)), f"{where}.request_id",
            "must be 1 to 64 letters, digits, '_' or '-'")
    v.check(bool(request.parts), f"{where}.content_parts", "at least one part is required")
    for j, part in enumerate(request.parts):
        at = f"{where}.content_parts[{j}]"
        if part.text is not None:
            continue
        uri = part.image_uri or ""
        if not uri.startswith(IMAGE_SCHEMES):
            v.add(f"{at}.image.uri", "must be a FileService URI (file://) or an http(s) URL")
        if part.content_type and not part.content_type.startswith("image/"):
            v.add(f"{at}.image.content_type", "must be an image/* MIME type")
        if "image" not in spec.capabilities:
            v.add(f"{at}.image", f"model {spec.id!r} does not take images")
    if request.output_schema_name:
        v.check(bool(SCHEMA_NAME_RE.fullmatch(request.output_schema_name)),
                f"{where}.output_schema_name", "must be 1 to 64 letters, digits, '_' or '-'")
    size = request_size(request)
    if size > MAX_REQUEST_BYTES:
        v.add(where, f"is {size} bytes; at most {MAX_REQUEST_BYTES} bytes (32 MiB) are "
                     "allowed per request")
    if request.output_schema is not None:
        try:
            check_schema(request.output_schema, f"{where}.output_schema")
        except InvalidArgument as exc:
            v.items.extend(exc.field_violations)
