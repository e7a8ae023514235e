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
from collections.abc import Mapping
from typing import Any

_tracer: Any = None
_NO_SPAN = contextlib.nullcontext()


def configure(enabled: bool, *, processor: Any = None) -> Any:
    """Turn tracing on (returning the tracer provider) or off (returning None).

    Args:
        processor: The span processor (default: a batch processor over the exporter the
            ``OTEL_*`` variables choose); tests pass one over an in-memory exporter.
    """
    global _tracer
    if not enabled:
        _tracer = None
        return None
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create(
        {"service.name": os.environ.get("OTEL_SERVICE_NAME", "rowforge")}))
    if processor is None:
        exporter = _exporter()
        processor = BatchSpanProcessor(exporter) if exporter is not None else None
    if processor is not None:
        provider.add_span_processor(processor)
    _tracer = provider.get_tracer("rowforge.server")
    return provider


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

    __slots__ = ("_span", "_token")

    def __init__(self, span: Any) -> None:
        self._span = span
        self._token: Any = None

    def __enter__(self) -> Any:
        from opentelemetry import context, trace

        self._token = context.attach(trace.set_span_in_context(self._span))
        return self._span

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        from opentelemetry import context

        context.detach(self._token)
        self._span.end()


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
    if _tracer is None or _unsampled():
        return _NO_SPAN
    return _tracer.start_as_current_span(name, attributes=attributes)


class _Leaf:
    """A span that ends when the block does, without becoming the current span: for work
    that makes no spans of its own (a model call, a write transaction, a sandbox run). It
    skips the context attach/detach and the generator-based context managers of
    ``start_as_current_span``, a third of a span's cost."""

    __slots__ = ("_span",)

    def __init__(self, span: Any) -> None:
        self._span = span

    def __enter__(self) -> Any:
        return self._span

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        if exc is not None:
            end_span(self._span, type(exc).__name__)
        else:
            self._span.end()


def leaf(name: str, **attributes: Any) -> contextlib.AbstractContextManager[Any]:
    """A child span of the current one around a block that makes no spans itself (a shared
    no-op when tracing is off)."""
    if _tracer is None or _unsampled():
        return _NO_SPAN
    return _Leaf(_tracer.start_span(name, attributes=attributes))


def start_span(name: str, **attributes: Any) -> Any:
    """A child span of the current one that does not become current (for async generators,
    whose consumer runs between their steps); None when tracing is off. End it with
    :func:`end_span`."""
    if _tracer is None or _unsampled():
        return None
    return _tracer.start_span(name, attributes=attributes)


def end_span(span: Any, outcome: str = "ok") -> None:
    """End a span of :func:`start_span` (``outcome`` other than ``ok`` marks it an error)."""
    if span is None:
        return
    if outcome != "ok":
        from opentelemetry.trace import Status, StatusCode

        span.set_status(Status(StatusCode.ERROR, outcome))
    span.end()


def shutdown(provider: Any) -> None:
    """Flush and stop the exporter of ``provider`` (None: nothing to do)."""
    if provider is not None:
        provider.shutdown()
