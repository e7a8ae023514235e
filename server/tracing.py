"""OpenTelemetry tracing: a span per RPC (grpc's own OpenTelemetry instrumentation, which
continues a caller's W3C ``traceparent``), with child spans for model calls, database
write transactions, sandbox runs and index searches.

Off by default, and then free: the SDK is never imported and :func:`span` hands back one shared
no-op context manager. On (``tracing = true``), spans are exported as the standard ``OTEL_*``
variables say: ``OTEL_TRACES_EXPORTER`` ``otlp`` (default; ``OTEL_EXPORTER_OTLP_ENDPOINT``,
``..._HEADERS``, ...), ``console`` or ``none``; ``OTEL_SERVICE_NAME`` (default ``rowforge``).
"""

from __future__ import annotations

import contextlib
import os
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


def _exporter() -> Any:
    kind = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower()
    if kind == "none":
        return None
    if kind == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def server_interceptor(provider: Any) -> Any:
    """grpc.aio's OpenTelemetry server interceptor (a span per RPC, ``traceparent`` honoured)."""
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    return aio_server_interceptor(tracer_provider=provider)


def span(name: str, **attributes: Any) -> contextlib.AbstractContextManager[Any]:
    """A child span of the current one (a shared no-op when tracing is off)."""
    if _tracer is None:
        return _NO_SPAN
    return _tracer.start_as_current_span(name, attributes=attributes)


def start_span(name: str, **attributes: Any) -> Any:
    """A child span of the current one that does not become current (for async generators,
    whose consumer runs between their steps); None when tracing is off. End it with
    :func:`end_span`."""
    if _tracer is None:
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
