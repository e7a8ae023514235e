"""The span helpers of ``server/tracing.py`` on the OpenTelemetry SDK: RPC spans continue a
caller's traceparent and carry the status code; leaf spans end with their block (errors
marked); nothing is made inside a trace the sampler dropped, while work outside any trace
still gets its spans."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from rowforge.server import tracing

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def _configure(monkeypatch: pytest.MonkeyPatch, sampler: str) -> InMemorySpanExporter:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", sampler)
    exporter = InMemorySpanExporter()
    tracing.configure(True, processor=SimpleSpanProcessor(exporter))
    return exporter


@pytest.fixture(autouse=True)
def _off_afterwards() -> Iterator[None]:
    yield
    tracing.configure(False)


def test_rpc_and_leaf_spans(monkeypatch: pytest.MonkeyPatch) -> None:
    exporter = _configure(monkeypatch, "parentbased_always_on")
    metadata = {"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01"}
    with tracing.rpc_span("/rowforge.v1.TableService/GetTable", metadata) as rpc:
        with tracing.leaf("db.write", **{"db.system": "sqlite"}):
            pass
        with pytest.raises(ValueError), tracing.leaf("provider.chat", model="m"):
            raise ValueError("upstream said no")
        tracing.rpc_done(rpc, "NOT_FOUND")
    spans = {s.name: s for s in exporter.get_finished_spans()}
    server = spans["/rowforge.v1.TableService/GetTable"]
    assert format(server.context.trace_id, "032x") == TRACE_ID
    assert server.kind == SpanKind.SERVER
    assert server.attributes["rpc.service"] == "rowforge.v1.TableService"
    assert server.attributes["rpc.method"] == "GetTable"
    assert server.attributes["rpc.grpc.status_code"] == 5
    assert server.status.status_code == StatusCode.ERROR
    for child in ("db.write", "provider.chat"):
        assert spans[child].parent.span_id == server.context.span_id
    assert spans["provider.chat"].status.status_code == StatusCode.ERROR
    assert spans["db.write"].status.status_code == StatusCode.UNSET


def test_nothing_is_made_inside_a_dropped_trace(monkeypatch: pytest.MonkeyPatch) -> None:
    exporter = _configure(monkeypatch, "always_off")
    with tracing.rpc_span("/rowforge.v1.TableService/GetTable", {}) as rpc:
        assert tracing.leaf("db.write") is tracing.span("knowledge.search")  # the no-op
        assert tracing.start_span("provider.chat") is None
        tracing.rpc_done(rpc, "OK")
    assert exporter.get_finished_spans() == ()


def test_work_outside_any_trace_gets_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    exporter = _configure(monkeypatch, "parentbased_always_on")
    with tracing.leaf("provider.chat", model="m"):  # a batch worker's call: no RPC around
        pass
    [span] = exporter.get_finished_spans()
    assert span.name == "provider.chat" and span.parent is None
