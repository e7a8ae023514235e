"""Hostile requests to every RPC, generated from the descriptors: no UNKNOWN, no INTERNAL.

Every method of every rowforge.v1 service gets messages built field by field from its input
descriptor (huge, empty, path-like, injection-like and non-UTF-8-looking strings; extreme and
negative numbers, NaN; unknown enum values; deep Struct nesting; many repeated items), plus
raw garbage bytes, over a real server. A caller's mistake must never come back as UNKNOWN or
INTERNAL, and the server must keep serving and log no unhandled error.

The run is seeded (``ROWFORGE_FUZZ_SEED``, else random); the seed is in the failure message.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
from collections import Counter
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import FieldDescriptor, MethodDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc

from rowforge.v1 import (
    batch_job_service_pb2,
    common_pb2,
    file_service_pb2,
    knowledge_service_pb2,
    model_service_pb2,
    table_service_pb2,
    table_service_pb2_grpc,
)
from tests.conftest import assert_no_unhandled_errors
from tests.support.server import ServerProcess

MODULES = (table_service_pb2, file_service_pb2, knowledge_service_pb2, model_service_pb2,
           batch_job_service_pb2)
PER_METHOD = int(os.environ.get("ROWFORGE_FUZZ_PER_METHOD", "30"))
FORBIDDEN = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}
STRINGS = ["", "t", "default", "a" * 70_000, "../../etc/passwd", "' OR 1=1 --", "\x00\x01",
           "😀" * 300, "${a}${", "%s%n{0}", "file://p/../x", "Ω" * 5, " ", "-1", "null",
           "rowforge/chat", "fake/gpt", "row_id", "ID", "Updated at"]
INTS = [0, 1, -1, 7, 100, 10**6, 2**31 - 1, -(2**31), 2**53 + 1]
INT64 = [*INTS, 2**63 - 1, -(2**63)]
FLOATS = [0.0, -0.0, 1.5, -1e308, 1e308, math.nan, math.inf, -math.inf, 5e-324]

INT_TYPES = {FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32,
             FieldDescriptor.TYPE_SFIXED32}
INT64_TYPES = {FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_SINT64,
               FieldDescriptor.TYPE_SFIXED64}
UINT_TYPES = {FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32}
UINT64_TYPES = {FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64}


class Generator:
    """Random messages for a descriptor, hostile values first."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def scalar(self, field: FieldDescriptor) -> Any:
        r, t = self.rng, field.type
        if t == FieldDescriptor.TYPE_STRING:
            return r.choice(STRINGS) if r.random() < 0.8 else "".join(
                chr(r.randrange(32, 0x2FFF)) for _ in range(r.randrange(1, 40)))
        if t == FieldDescriptor.TYPE_BYTES:
            return r.choice([b"", os.urandom(r.randrange(1, 4096)), b"\x89PNG\r\n\x1a\n" * 3])
        if t == FieldDescriptor.TYPE_BOOL:
            return r.random() < 0.5
        if t in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
            value = r.choice(FLOATS)
            return value if t == FieldDescriptor.TYPE_DOUBLE or abs(value) < 1e38 \
                or not math.isfinite(value) else 1.0
        if t == FieldDescriptor.TYPE_ENUM:
            numbers = [v.number for v in field.enum_type.values]
            return r.choice([*numbers, 999, -5])
        if t in INT_TYPES:
            return r.choice([v for v in INTS if -(2**31) <= v < 2**31])
        if t in INT64_TYPES:
            return r.choice(INT64)
        if t in UINT_TYPES:
            return r.choice([0, 1, 2**32 - 1, 100])
        if t in UINT64_TYPES:
            return r.choice([0, 1, 2**64 - 1, 2**63])
        raise AssertionError(f"unexpected field type {t}")

    def fill(self, msg: Any, depth: int = 0) -> Any:
        name = msg.DESCRIPTOR.full_name
        if name == "google.protobuf.Struct" and self.rng.random() < 0.1:
            return self.deep_struct(msg, self.rng.choice([50, 99, 150]))
        for field in msg.DESCRIPTOR.fields:
            if self.rng.random() < 0.45:
                continue
            if field.containing_oneof is not None and msg.WhichOneof(
                    field.containing_oneof.name) is not None:
                continue
            self.set(msg, field, depth)
        return msg

    def set(self, msg: Any, field: FieldDescriptor, depth: int) -> None:
        is_message = field.type == FieldDescriptor.TYPE_MESSAGE
        if _repeated(field):
            count = self.rng.choice([0, 1, 2, 3, 300 if depth == 0 else 3])
            target = getattr(msg, field.name)
            if is_message and field.message_type.GetOptions().map_entry:
                key_f = field.message_type.fields_by_name["key"]
                value_f = field.message_type.fields_by_name["value"]
                for _ in range(min(count, 5)):
                    key = self.scalar(key_f)
                    if value_f.type == FieldDescriptor.TYPE_MESSAGE:
                        if depth < 4:
                            self.fill(target[key], depth + 1)
                    else:
                        target[key] = self.scalar(value_f)
                return
            for _ in range(count):
                if is_message:
                    if depth >= 4:
                        return
                    self.fill(target.add(), depth + 1)
                else:
                    target.append(self.scalar(field))
            return
        if is_message:
            if depth < 4:
                getattr(msg, field.name).SetInParent()
                self.fill(getattr(msg, field.name), depth + 1)
            return
        setattr(msg, field.name, self.scalar(field))

    @staticmethod
    def deep_struct(msg: Any, depth: int) -> Any:
        value = msg.fields["k"]
        for _ in range(depth):
            value = value.list_value.values.add()
        value.string_value = "bottom"
        return msg


def _repeated(field: FieldDescriptor) -> bool:
    if hasattr(field, "is_repeated"):  # protobuf >= 6; label is gone in 7
        return bool(field.is_repeated)
    return field.label == FieldDescriptor.LABEL_REPEATED  # type: ignore[attr-defined]


def methods() -> Iterator[MethodDescriptor]:
    for module in MODULES:
        for service in module.DESCRIPTOR.services_by_name.values():
            yield from service.methods


def call(channel: grpc.Channel, method: MethodDescriptor, payloads: list[bytes],
         metadata: tuple[tuple[str, str], ...]) -> grpc.StatusCode:
    path = f"/{method.containing_service.full_name}/{method.name}"
    try:
        if method.client_streaming and method.server_streaming:
            responses = channel.stream_stream(path)(iter(payloads), metadata=metadata, timeout=5)
            for _, _ in zip(range(5), responses, strict=False):
                pass
            responses.cancel()
        elif method.client_streaming:
            channel.stream_unary(path)(iter(payloads), metadata=metadata, timeout=10)
        elif method.server_streaming:
            responses = channel.unary_stream(path)(payloads[0], metadata=metadata, timeout=5)
            for _, _ in zip(range(5), responses, strict=False):
                pass
            responses.cancel()
        else:
            channel.unary_unary(path)(payloads[0], metadata=metadata, timeout=10)
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


@pytest.fixture(scope="module")
def seed() -> int:
    return int(os.environ.get("ROWFORGE_FUZZ_SEED") or random.SystemRandom().randrange(2**32))


def test_no_hostile_request_gets_unknown_or_internal(server: ServerProcess, seed: int) -> None:
    rng = random.Random(seed)
    gen = Generator(rng)
    codes: Counter[str] = Counter()
    bad: list[str] = []
    total = 0
    with grpc.insecure_channel(server.address, options=[
            ("grpc.max_send_message_length", 64 * 1024 * 1024)]) as channel:
        tables = table_service_pb2_grpc.TableServiceStub(channel)
        with contextlib.suppress(grpc.RpcError):  # a table the fuzzed ids "t" and "a" hit
            tables.CreateTable(table_service_pb2.CreateTableRequest(
                table_type=common_pb2.TABLE_TYPE_ACTION, table_id="t",
                cols=[table_service_pb2.Column(id="a", dtype="str")]),
                metadata=(("x-project-id", "fuzz"),), timeout=10)
        for method in methods():
            cls = message_factory.GetMessageClass(method.input_type)
            for i in range(PER_METHOD + 2):
                if i >= PER_METHOD:  # raw garbage, then a truncated valid-looking message
                    payloads = [os.urandom(rng.randrange(1, 64)),
                                gen.fill(cls()).SerializeToString()[:-1] or b"\x0a"]
                    if i == PER_METHOD + 1:
                        payloads.reverse()
                else:
                    payloads = [gen.fill(cls()).SerializeToString()
                                for _ in range(rng.choice([1, 1, 2, 3]))]
                project = rng.choice(["fuzz"] * 8 + ["default", "../x", "F" * 65])
                code = call(channel, method, payloads, (("x-project-id", project),))
                codes[code.name] += 1
                total += 1
                if code in FORBIDDEN:
                    bad.append(f"{method.full_name} #{i} -> {code.name}")
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(),
                                                            timeout=10)
    print(f"fuzz seed {seed}: {total} calls, {dict(codes)}")
    assert not bad, (f"seed {seed} (rerun with ROWFORGE_FUZZ_SEED={seed}): {len(bad)} calls "
                     "got UNKNOWN/INTERNAL:\n" + "\n".join(bad[:40]))
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert_no_unhandled_errors(server)
