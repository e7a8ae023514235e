"""Descriptor-driven request fuzzing over every rowforge.v1 RPC.

Walks the ``rowforge.v1`` file descriptors (no hand-written list of RPCs or fields), builds
random, malformed, huge and deeply nested requests, and sends them as raw bytes through a
channel with identity serializers, so that bytes no client library would produce reach the
server too. Used by ``tests/integration/test_fuzz.py`` and ``bench/bench_fuzz_memory.py``.
"""

from __future__ import annotations

import asyncio
import importlib
import math
import pkgutil
import random
import struct
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import descriptor as d
from google.protobuf import message_factory

import rowforge.v1

#: Statuses that mean "the server broke", whatever the request.
BROKEN = frozenset({grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL})
#: Depth of nested unknown groups / Structs that upb refuses to decode (its limit is 100).
DEEP = 120

STRINGS = [
    "", "a", "rowforge/chat", "rowforge/embed", "rowforge/rerank", "default", "ID",
    "../../etc/passwd", "' OR 1=1 --", "\"; DROP TABLE projects; --", "${question}",
    "file:///etc/passwd", "file://", "http://169.254.169.254/latest/meta-data/",
    "\x00", "\u202e\u0646\u0635", "😀" * 10, "名前", " ", "\t\r\n", "%s%n%x",
    "question", "answer", "Title", "Text", "{}", "[]", "null", "1e309", "-1",
    "TABLE_TYPE_ACTION", "x" * 300, "a,b\n1,2\n", "=cmd|' /C calc'!A0",
]
INTS = [0, 1, -1, 2, 7, 100, 101, 1000, 2**31 - 1, -(2**31), 2**63 - 1, -(2**63)]
UINTS = [0, 1, 2, 100, 2**32 - 1, 2**64 - 1]
FLOATS = [0.0, -0.0, 0.5, 1.0, 2.5, -1.0, 1e308, -1e308, math.inf, -math.inf, math.nan, 1e-320]

_INT_TYPES = {d.FieldDescriptor.TYPE_INT32, d.FieldDescriptor.TYPE_SINT32,
              d.FieldDescriptor.TYPE_SFIXED32}
_INT64_TYPES = {d.FieldDescriptor.TYPE_INT64, d.FieldDescriptor.TYPE_SINT64,
                d.FieldDescriptor.TYPE_SFIXED64}
_UINT_TYPES = {d.FieldDescriptor.TYPE_UINT32, d.FieldDescriptor.TYPE_FIXED32}
_UINT64_TYPES = {d.FieldDescriptor.TYPE_UINT64, d.FieldDescriptor.TYPE_FIXED64}


@dataclass(frozen=True)
class Rpc:
    """One RPC of the API, as its descriptor describes it."""

    service: str
    name: str
    input: d.Descriptor
    client_streaming: bool
    server_streaming: bool

    @property
    def path(self) -> str:
        return f"/{self.service}/{self.name}"

    def new(self) -> Any:
        return message_factory.GetMessageClass(self.input)()


def api_rpcs() -> list[Rpc]:
    """Every RPC of every service in the ``rowforge.v1`` package, found by its descriptors."""
    found: dict[str, Rpc] = {}
    for info in pkgutil.iter_modules(rowforge.v1.__path__):
        if not info.name.endswith("_pb2"):
            continue
        module = importlib.import_module(f"rowforge.v1.{info.name}")
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                rpc = Rpc(service.full_name, method.name, method.input_type,
                          method.client_streaming, method.server_streaming)
                found[rpc.path] = rpc
    return [found[k] for k in sorted(found)]


Setter = Callable[[Any, str], None]


def string_fields(desc: d.Descriptor, prefix: str = "", depth: int = 0
                  ) -> Iterator[tuple[str, Setter]]:
    """Every string field reachable from ``desc`` through nested messages (map keys with
    string values included), as (dotted name, function setting it on a request)."""
    if depth > 3:
        return
    for f in desc.fields:
        name = f"{prefix}{f.name}"
        if _is_map(f):
            key_f, value_f = f.message_type.fields_by_name["key"], \
                f.message_type.fields_by_name["value"]
            if key_f.type == d.FieldDescriptor.TYPE_STRING:
                yield f"{name}{{key}}", _map_key_setter(f, value_f)
            if value_f.type == d.FieldDescriptor.TYPE_STRING:
                yield f"{name}{{value}}", _map_value_setter(f)
        elif f.type == d.FieldDescriptor.TYPE_STRING:
            yield name, _scalar_setter(f)
        elif f.type == d.FieldDescriptor.TYPE_MESSAGE \
                and f.message_type.full_name == "google.protobuf.Struct":
            yield f"{name}{{key}}", _nested_setter(f, _struct_key)
            yield f"{name}{{value}}", _nested_setter(f, _struct_value)
        elif f.type == d.FieldDescriptor.TYPE_MESSAGE \
                and f.message_type.full_name not in _WELL_KNOWN:
            for sub, setter in string_fields(f.message_type, f"{name}.", depth + 1):
                yield sub, _nested_setter(f, setter)


def _scalar_setter(f: d.FieldDescriptor) -> Setter:
    def put(msg: Any, value: str) -> None:
        if f.is_repeated:
            getattr(msg, f.name).append(value)
        else:
            setattr(msg, f.name, value)
    return put


def _nested_setter(f: d.FieldDescriptor, inner: Setter) -> Setter:
    def put(msg: Any, value: str) -> None:
        child = getattr(msg, f.name)
        if f.is_repeated:
            child = child.add()
        elif f.type == d.FieldDescriptor.TYPE_MESSAGE:
            child.SetInParent()
        inner(child, value)
    return put


def _map_key_setter(f: d.FieldDescriptor, value_f: d.FieldDescriptor) -> Setter:
    def put(msg: Any, value: str) -> None:
        target = getattr(msg, f.name)
        if value_f.type == d.FieldDescriptor.TYPE_MESSAGE:
            target[value].SetInParent()
        else:
            target[value] = "x" if value_f.type == d.FieldDescriptor.TYPE_STRING else 1
    return put


def _struct_key(msg: Any, value: str) -> None:
    msg[value] = "x"


def _struct_value(msg: Any, value: str) -> None:
    msg["x"] = value


def _map_value_setter(f: d.FieldDescriptor) -> Setter:
    def put(msg: Any, value: str) -> None:
        getattr(msg, f.name)["x"] = value
    return put


def with_string(rpc: Rpc, setter: Setter, value: str) -> Any:
    """A request of ``rpc`` with ``value`` put in by ``setter``, its top-level enums set to
    their first real value (so that validation gets past them to the string)."""
    message = rpc.new()
    for f in rpc.input.fields:
        if f.type == d.FieldDescriptor.TYPE_ENUM and not f.is_repeated \
                and len(f.enum_type.values) > 1:
            setattr(message, f.name, f.enum_type.values[1].number)
    setter(message, value)
    return message


_WELL_KNOWN = {"google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue",
               "google.protobuf.Timestamp", "google.protobuf.Duration",
               "google.protobuf.FieldMask"}


def _is_repeated(f: d.FieldDescriptor) -> bool:
    return f.is_repeated


def _is_map(f: d.FieldDescriptor) -> bool:
    return (f.type == d.FieldDescriptor.TYPE_MESSAGE and _is_repeated(f)
            and f.message_type.GetOptions().map_entry)


# -- random messages ------------------------------------------------------------------------

class MessageFuzzer:
    """Random messages of any descriptor: hostile strings, extreme numbers, unknown enum
    values, random JSON (sometimes nested deeper than any sane schema)."""

    def __init__(self, rng: random.Random, *, max_depth: int = 4) -> None:
        self.rng = rng
        self.max_depth = max_depth

    def message(self, desc: d.Descriptor, depth: int = 0) -> Any:
        msg = message_factory.GetMessageClass(desc)()
        self.fill(msg, depth)
        return msg

    def fill(self, msg: Any, depth: int) -> None:
        desc = msg.DESCRIPTOR
        if desc.full_name == "google.protobuf.Struct":
            msg.update(self.json_object(depth))
            return
        if desc.full_name == "google.protobuf.Value":
            _set_value(msg, self.json(depth))
            return
        if desc.full_name == "google.protobuf.ListValue":
            msg.extend(self.json_list(depth))
            return
        chosen_oneofs = {o.name: self.rng.choice(o.fields) for o in desc.oneofs
                         if o.fields and not _synthetic(o)}
        for f in desc.fields:
            oneof = f.containing_oneof
            if oneof is not None and not _synthetic(oneof) and chosen_oneofs[oneof.name] is not f:
                continue
            if self.rng.random() < 0.3:
                continue  # leave it unset
            self._field(msg, f, depth)

    def _field(self, msg: Any, f: d.FieldDescriptor, depth: int) -> None:
        if _is_map(f):
            target = getattr(msg, f.name)
            key_f, value_f = f.message_type.fields_by_name["key"], \
                f.message_type.fields_by_name["value"]
            for _ in range(self.rng.randint(0, 3)):
                key = self.scalar(key_f)
                if value_f.type == d.FieldDescriptor.TYPE_MESSAGE:
                    if depth < self.max_depth:
                        self.fill(target[key], depth + 1)
                else:
                    target[key] = self.scalar(value_f)
            return
        if _is_repeated(f):
            target = getattr(msg, f.name)
            for _ in range(self.rng.choice([0, 1, 1, 2, 3, 5])):
                if f.type == d.FieldDescriptor.TYPE_MESSAGE:
                    if depth < self.max_depth:
                        self.fill(target.add(), depth + 1)
                else:
                    target.append(self.scalar(f))
            return
        if f.type == d.FieldDescriptor.TYPE_MESSAGE:
            if depth < self.max_depth:
                self.fill(getattr(msg, f.name), depth + 1)
            return
        setattr(msg, f.name, self.scalar(f))

    def scalar(self, f: d.FieldDescriptor) -> Any:
        rng = self.rng
        t = f.type
        if t == d.FieldDescriptor.TYPE_STRING:
            return self.string()
        if t == d.FieldDescriptor.TYPE_BYTES:
            return rng.randbytes(rng.choice([0, 1, 16, 300, 5000]))
        if t == d.FieldDescriptor.TYPE_BOOL:
            return rng.random() < 0.5
        if t in (d.FieldDescriptor.TYPE_DOUBLE, d.FieldDescriptor.TYPE_FLOAT):
            value = rng.choice(FLOATS) if rng.random() < 0.7 else rng.uniform(-1e6, 1e6)
            if t == d.FieldDescriptor.TYPE_FLOAT and math.isfinite(value) and abs(value) > 3e38:
                value = math.copysign(math.inf, value)
            return value
        if t == d.FieldDescriptor.TYPE_ENUM:
            values = [v.number for v in f.enum_type.values]
            return rng.choice([*values, *values, 999, -1] if rng.random() < 0.2 else values)
        if t in _INT_TYPES:
            return rng.choice([v for v in INTS if -(2**31) <= v < 2**31])
        if t in _INT64_TYPES:
            return rng.choice(INTS)
        if t in _UINT_TYPES:
            return rng.choice([v for v in UINTS if v < 2**32])
        if t in _UINT64_TYPES:
            return rng.choice(UINTS)
        raise AssertionError(f"unhandled field type {t} of {f.full_name}")

    def string(self) -> str:
        rng = self.rng
        roll = rng.random()
        if roll < 0.6:
            return rng.choice(STRINGS)
        if roll < 0.8:
            return "".join(chr(rng.choice([rng.randint(32, 126), rng.randint(0x80, 0x2FFF),
                                           rng.randint(0x1F300, 0x1F64F)]))
                           for _ in range(rng.randint(1, 40)))
        if roll < 0.95:
            return rng.choice(["x", "é", " a"]) * rng.choice([1000, 10_000, 100_000])
        return rng.choice(STRINGS) * 2

    def json(self, depth: int) -> Any:
        rng = self.rng
        if depth >= self.max_depth + 2 or rng.random() < 0.5:
            return rng.choice([None, True, False, 0, -1.5, 1e300, "", self.string()])
        if rng.random() < 0.5:
            return self.json_object(depth + 1)
        return self.json_list(depth + 1)

    def json_object(self, depth: int) -> dict[str, Any]:
        if self.rng.random() < 0.05:
            return deep_json(self.rng.choice([10, 25, 60]))
        return {self.string()[:40]: self.json(depth + 1) for _ in range(self.rng.randint(0, 3))}

    def json_list(self, depth: int) -> list[Any]:
        return [self.json(depth + 1) for _ in range(self.rng.randint(0, 3))]


def _synthetic(oneof: d.OneofDescriptor) -> bool:
    """proto3 ``optional`` fields live in a synthetic oneof of their own."""
    return len(oneof.fields) == 1 and oneof.name == f"_{oneof.fields[0].name}"


def _set_value(msg: Any, value: Any) -> None:
    from google.protobuf import struct_pb2

    wrapper = struct_pb2.Struct()
    wrapper.update({"v": value})
    msg.CopyFrom(wrapper.fields["v"])


def deep_json(depth: int) -> dict[str, Any]:
    """``{"a": {"a": ... {"a": 1}}}`` nested ``depth`` times."""
    value: dict[str, Any] = {"a": 1}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


# -- malformed bytes ------------------------------------------------------------------------

def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def deep_groups(depth: int = DEEP, field_number: int = 15) -> bytes:
    """Unknown groups nested ``depth`` deep: valid wire format, beyond upb's depth limit."""
    return varint((field_number << 3) | 3) * depth + varint((field_number << 3) | 4) * depth


def invalid_utf8_string(field_number: int = 1) -> bytes:
    """A length-delimited field holding bytes that are not UTF-8 (refused for proto3 strings)."""
    return varint((field_number << 3) | 2) + varint(3) + b"\xff\xfe\xfd"


def garbage(rng: random.Random, valid: bytes) -> bytes:
    """Bytes that do not decode as the RPC's request message (most of the time)."""
    choice = rng.randrange(7)
    if choice == 0:
        return rng.randbytes(rng.randint(1, 512))
    if choice == 1:
        return deep_groups()
    if choice == 2:
        return valid + deep_groups()
    if choice == 3:
        return b"\x0a\xff\xff\xff\xff\x0f" + rng.randbytes(8)  # a length far past the end
    if choice == 4 and valid:
        return valid[: rng.randrange(len(valid))] + b"\x0a"  # truncated mid-field
    if choice == 5:
        return b"\x07" + struct.pack("<q", rng.getrandbits(63))  # wire type 7 does not exist
    return invalid_utf8_string(rng.choice([1, 2, 3]))


# -- sending --------------------------------------------------------------------------------

@dataclass
class Outcome:
    """What one fuzzed call gave back."""

    rpc: str
    kind: str
    code: grpc.StatusCode
    details: str = ""
    trailer_bytes: int = 0
    status_details: bytes = b""


@dataclass
class Report:
    outcomes: list[Outcome] = field(default_factory=list)

    def codes(self) -> Counter[str]:
        return Counter(o.code.name for o in self.outcomes)

    def broken(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.code in BROKEN]

    def summary(self, limit: int = 20) -> str:
        lines = [f"{len(self.outcomes)} calls: {dict(self.codes())}"]
        for o in self.broken()[:limit]:
            lines.append(f"  {o.code.name} {o.rpc} [{o.kind}]: {o.details[:300]}")
        return "\n".join(lines)


async def call_raw(channel: grpc.aio.Channel, rpc: Rpc, messages: list[bytes], *,
                   metadata: tuple[tuple[str, str], ...] = (), timeout: float = 20.0,
                   kind: str = "") -> Outcome:
    """Send ``messages`` (one for a unary request) as raw bytes; drain any response stream."""
    ident: Callable[[bytes], bytes] = _identity
    call: Any
    try:
        if rpc.client_streaming:
            requests = _aiter(messages)
            if rpc.server_streaming:
                call = channel.stream_stream(rpc.path, request_serializer=ident,
                                             response_deserializer=ident)(
                    requests, metadata=metadata, timeout=timeout)
                async for _ in call:
                    pass
            else:
                call = channel.stream_unary(rpc.path, request_serializer=ident,
                                            response_deserializer=ident)(
                    requests, metadata=metadata, timeout=timeout)
                await call
        elif rpc.server_streaming:
            call = channel.unary_stream(rpc.path, request_serializer=ident,
                                        response_deserializer=ident)(
                messages[0], metadata=metadata, timeout=timeout)
            async for _ in call:
                pass
        else:
            call = channel.unary_unary(rpc.path, request_serializer=ident,
                                       response_deserializer=ident)(
                messages[0], metadata=metadata, timeout=timeout)
            await call
    except grpc.aio.AioRpcError as err:
        trailers = err.trailing_metadata() or ()
        size = sum(len(k) + len(v) for k, v in trailers) + len(err.details() or "")
        rich = next((v for k, v in trailers if k == "grpc-status-details-bin"), b"")
        return Outcome(rpc.path, kind, err.code(), err.details() or "", size, bytes(rich))
    return Outcome(rpc.path, kind, grpc.StatusCode.OK)


def _identity(data: bytes) -> bytes:
    return data


async def _aiter(items: Iterable[bytes]) -> AsyncIterator[bytes]:
    for item in items:
        yield item


def cases(rpc: Rpc, rng: random.Random, count: int) -> Iterator[tuple[str, list[bytes]]]:
    """``count`` fuzz cases for one RPC: (kind, raw request messages)."""
    fuzzer = MessageFuzzer(rng)
    for i in range(count):
        valid = fuzzer.message(rpc.input).SerializeToString()
        kind = ("random", "garbage", "empty", "random")[i % 4]
        if kind == "random":
            first = valid
        elif kind == "empty":
            first = b""
        else:
            first = garbage(rng, valid)
        if not rpc.client_streaming:
            yield kind, [first]
            continue
        second = fuzzer.message(rpc.input).SerializeToString()
        if kind == "garbage":  # a good first message, then garbage mid-stream
            yield "garbage-mid-stream", [valid, garbage(rng, second), second]
        else:
            yield kind, [first, second]


async def run(channel: grpc.aio.Channel, rpcs: list[Rpc], *, seed: int, per_rpc: int,
              metadata: tuple[tuple[str, str], ...] = (), concurrency: int = 8,
              timeout: float = 20.0) -> Report:
    """Fuzz every RPC ``per_rpc`` times, ``concurrency`` calls at a time."""
    rng = random.Random(seed)
    work = [(rpc, kind, msgs) for rpc in rpcs for kind, msgs in cases(rpc, rng, per_rpc)]
    rng.shuffle(work)
    report = Report()
    gate = asyncio.Semaphore(concurrency)

    async def one(rpc: Rpc, kind: str, msgs: list[bytes]) -> None:
        async with gate:
            report.outcomes.append(await call_raw(channel, rpc, msgs, metadata=metadata,
                                                  timeout=timeout, kind=kind))

    await asyncio.gather(*(one(*w) for w in work))
    return report
