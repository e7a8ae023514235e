"""OpenTelemetry tracing: a span per RPC (made by the server's interceptor, continuing a
caller's W3C ``traceparent``), with child spans for model calls, database write transactions,
sandbox runs and index searches.

Off by default, and then free: the SDK is never imported and :func:`span` hands back one shared
no-op context manager. On (``tracing = true``), spans are exported as the standard ``OTEL_*``
variables say: ``OTEL_TRACES_EXPORTER`` ``otlp`` (default; ``OTEL_EXPORTER_OTLP_ENDPOINT``,
``..._HEADERS``, ...), ``console`` or ``none``; ``OTEL_SERVICE_NAME`` (default ``rowforge``).
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
import time
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any

_tracer: Any = None
_NO_SPAN = contextlib.nullcontext()
#: What a leaf needs of the span :class:`_Current` made current (an RPC's, a search's), read
#: with one ``ContextVar.get`` instead of the OpenTelemetry API's ``get_current_span`` (five
#: calls and an ABC check per leaf, paid on every model call): ``(span context, trace id,
#: trace flags, trace state)`` of a recording span, ``False`` for a span the sampler dropped,
#: None when none of ours is current (then the OpenTelemetry context decides, as before).
_PARENT: ContextVar[Any] = ContextVar("rowforge_tracing_parent", default=None)
#: What leaf spans need (see :class:`_Leaf`): the processors' ``on_end``, the provider's
#: resource, the instrumentation scope, a span id generator.
_sink: Any = None


def configure(enabled: bool, *, processor: Any = None) -> Any:
    """Turn tracing on (returning the tracer provider) or off (returning None).

    Args:
        processor: The span processor (default: a batch processor over the exporter the
            ``OTEL_*`` variables choose); tests pass one over an in-memory exporter.
    """
    global _tracer, _sink
    if not enabled:
        _tracer = _sink = None
        return None
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    provider = TracerProvider(resource=Resource.create(
        {"service.name": os.environ.get("OTEL_SERVICE_NAME", "rowforge")}))
    if processor is None:
        exporter = _exporter()
        processor = BatchSpanProcessor(exporter) if exporter is not None else None
    if processor is not None:
        provider.add_span_processor(processor)
    _tracer = provider.get_tracer("rowforge.server")
    # Leaf spans end where the SDK's own spans do: the provider's processors (those added
    # later by add_span_processor included), the object the SDK's Span.end calls.
    _sink = _LeafSink(provider._active_span_processor.on_end, provider.resource,
                      InstrumentationScope("rowforge.server"))
    return provider


class _LeafSink:
    """What :class:`_Leaf` needs to finish a span, looked up once."""

    __slots__ = ("context", "current", "invalid", "on_end", "readable", "resource", "scope",
                 "span_id", "unset")

    def __init__(self, on_end: Any, resource: Any, scope: Any) -> None:
        from opentelemetry.sdk.trace import ReadableSpan
        from opentelemetry.trace import (
            INVALID_SPAN,
            SpanContext,
            Status,
            StatusCode,
            get_current_span,
        )

        self.current, self.invalid = get_current_span, INVALID_SPAN
        self.on_end, self.resource, self.scope = on_end, resource, scope
        # What the SDK's RandomIdGenerator.generate_span_id draws, without its Python frame.
        self.span_id = random.getrandbits
        self.readable, self.context = ReadableSpan, SpanContext
        self.unset = Status(StatusCode.UNSET)


def _unsampled() -> bool:
    """Inside a trace that is not kept (the sampler said no): its children would be dropped
    too, so none is made. Work outside any trace (background jobs) still gets its own."""
    from opentelemetry.trace import INVALID_SPAN, get_current_span

    current = get_current_span()
    return current is not INVALID_SPAN and not current.is_recording()


def _exporter() -> Any:
    kind = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower()
    if kind == "none":
        return None
    if kind == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def rpc_span(method: str, metadata: Mapping[str, str]) -> contextlib.AbstractContextManager[Any]:
    """The server span of one RPC, current while it runs: named after the full method, kind
    SERVER, with the OpenTelemetry RPC attributes, continuing the caller's W3C
    ``traceparent``. A shared no-op (``as span`` gives None) when tracing is off.

    Made by the server's own interceptor rather than opentelemetry-instrumentation-grpc's,
    which wraps every call's context in a proxy object and every response stream in one more
    async generator: that cost ~15% of StreamAddRows' throughput (bench/bench_metrics.py).
    """
    if _tracer is None:
        return _NO_SPAN
    from opentelemetry.trace import SpanKind

    parent = _propagator().extract(metadata) if "traceparent" in metadata else None
    service, _, name = method.lstrip("/").rpartition("/")
    return _Current(_tracer.start_span(
        method, context=parent, kind=SpanKind.SERVER, record_exception=False,
        set_status_on_exception=False,
        attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}))


class _Current:
    """A span that is the current one while the block runs (what ``start_as_current_span``
    does, without its two layers of generator-based context managers)."""

    __slots__ = ("_parent", "_span", "_token")

    def __init__(self, span: Any) -> None:
        self._span = span
        self._token: Any = None
        self._parent: Any = None

    def __enter__(self) -> Any:
        from opentelemetry import context, trace

        self._token = context.attach(trace.set_span_in_context(self._span))
        self._parent = _PARENT.set(_parent_of(self._span))
        return self._span

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        from opentelemetry import context

        try:
            _PARENT.reset(self._parent)
        except ValueError:  # ended in another context than it began (as OTel's detach logs)
            pass
        context.detach(self._token)
        if exc is not None and self._span.is_recording():
            # The RPC span never sees one (the interceptor turns errors into a status code).
            self._span.set_status(_error(type(exc).__name__))
        self._span.end()


def _parent_of(span: Any) -> Any:
    """What :data:`_PARENT` holds while ``span`` is current."""
    if not span.is_recording():
        return False
    context = span.get_span_context()
    return context, context.trace_id, context.trace_flags, context.trace_state


def rpc_done(span: Any, code: str) -> None:
    """Record an RPC's status code (``OK``, ``NOT_FOUND`` ...) on its span (None: off)."""
    if span is None or not span.is_recording():
        return
    import grpc

    span.set_attribute("rpc.grpc.status_code", grpc.StatusCode[code].value[0])
    if code != "OK":
        from opentelemetry.trace import Status, StatusCode

        span.set_status(Status(StatusCode.ERROR, code))


@functools.cache
def _propagator() -> Any:
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator()


def span(name: str, **attributes: Any) -> contextlib.AbstractContextManager[Any]:
    """A child span of the current one (a shared no-op when tracing is off)."""
    if _tracer is None:
        return _NO_SPAN
    parent = _PARENT.get()
    if parent is False or (parent is None and _unsampled()):
        return _NO_SPAN
    return _Current(_tracer.start_span(name, attributes=attributes))


class _Leaf:
    """A child span of the current one, ending with its block, that never becomes current:
    for work that makes no spans of its own (a model call, a write transaction, a sandbox run).

    Built as the SDK's own :class:`~opentelemetry.sdk.trace.ReadableSpan` when it ends and
    handed to the span processor, as the SDK's ``Span.end`` does, without what a leaf does not
    need: the sampler (a child of a recording span is always kept by the SDK's samplers:
    parent-based ones follow the parent, ratio ones decide by the trace id the child shares,
    ``always_on`` keeps all), per-attribute validation and locking (our attributes are
    strings, numbers and booleans), the span's own lock and the processors' ``on_start``
    (no processor of the SDK uses it for export). ~4 µs instead of ~15 µs per span, paid on
    every model call (bench/bench_metrics.py).
    """

    __slots__ = ("_attributes", "_name", "_parent", "_start")

    def __init__(self, name: str, parent: tuple[Any, int, Any, Any],
                 attributes: dict[str, Any]) -> None:
        """``parent``: the parent's span context, trace id, trace flags and trace state."""
        self._name, self._parent, self._attributes = name, parent, attributes
        self._start = time.time_ns()

    def __enter__(self) -> _Leaf:
        return self

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        self.end("ok" if exc is None else type(exc).__name__)

    def end(self, outcome: str = "ok") -> None:
        sink = _sink
        if sink is None:  # tracing turned off meanwhile
            return
        parent, trace_id, flags, state = self._parent
        context = sink.context(trace_id, sink.span_id(64) or 1, False, flags, state)
        sink.on_end(sink.readable(
            self._name, context, parent, sink.resource, self._attributes,
            status=sink.unset if outcome == "ok" else _error(outcome),
            start_time=self._start, end_time=time.time_ns(), instrumentation_scope=sink.scope))


def _error(outcome: str) -> Any:
    from opentelemetry.trace import Status, StatusCode

    return Status(StatusCode.ERROR, outcome)


def _leaf_or_root(name: str, attributes: dict[str, Any]) -> Any:
    """A :class:`_Leaf` under the current span when it records; an SDK span when there is no
    current span (work outside any RPC: the sampler decides about a new trace); None inside a
    trace the sampler dropped (its children would be dropped too)."""
    parent = _PARENT.get()
    if parent:
        return _Leaf(name, parent, attributes)
    if parent is False:
        return None
    current = _sink.current()  # none of ours is current: whatever OpenTelemetry's context says
    if current is _sink.invalid:
        return _SdkLeaf(_tracer.start_span(name, attributes=attributes))
    if not current.is_recording():
        return None
    return _Leaf(name, _parent_of(current), attributes)


class _SdkLeaf:
    """An SDK span with :class:`_Leaf`'s interface (the root of a new trace)."""

    __slots__ = ("_span",)

    def __init__(self, span: Any) -> None:
        self._span = span

    def __enter__(self) -> _SdkLeaf:
        return self

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        self.end("ok" if exc is None else type(exc).__name__)

    def end(self, outcome: str = "ok") -> None:
        if outcome != "ok":
            from opentelemetry.trace import Status, StatusCode

            self._span.set_status(Status(StatusCode.ERROR, outcome))
        self._span.end()


def leaf(name: str, **attributes: Any) -> contextlib.AbstractContextManager[Any]:
    """A child span of the current one around a block that makes no spans itself (a shared
    no-op when tracing is off)."""
    if _tracer is None:
        return _NO_SPAN
    parent = _PARENT.get()
    if parent:  # the hot path (a model call or write inside a kept trace), inlined
        return _Leaf(name, parent, attributes)
    return _leaf_or_root(name, attributes) or _NO_SPAN


def start_span(name: str, **attributes: Any) -> Any:
    """A child span of the current one that does not become current (for async generators,
    whose consumer runs between their steps); None when tracing is off. End it with
    :func:`end_span`."""
    if _tracer is None:
        return None
    return _leaf_or_root(name, attributes)


def end_span(span: Any, outcome: str = "ok") -> None:
    """End a span of :func:`start_span` (``outcome`` other than ``ok`` marks it an error)."""
    if span is not None:
        span.end(outcome)


def shutdown(provider: Any) -> None:
    """Flush and stop the exporter of ``provider`` (None: nothing to do)."""
    if provider is not None:
        provider.shutdown()
