"""The span helpers of ``server/tracing.py`` on the OpenTelemetry SDK: RPC spans continue a
caller's traceparent and carry the status code; leaf spans end with their block (errors
marked); nothing is made inside a trace the sampler dropped, while work outside any trace
still gets its spans."""

from __future__ import annotations

import asyncio
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


def test_a_leaf_is_exported_as_the_sdk_would_make_it(monkeypatch: pytest.MonkeyPatch) -> None:
    exporter = _configure(monkeypatch, "parentbased_always_on")
    with tracing.rpc_span("/rowforge.v1.TableService/AddRows", {}):
        with tracing.leaf("provider.chat", model="m", streamed=False):
            pass
        streamed = tracing.start_span("provider.chat", model="m", streamed=True)
        tracing.end_span(streamed, "DEADLINE_EXCEEDED")
        with tracing.span("knowledge.search", k=10):  # made by the SDK itself
            pass
    spans = exporter.get_finished_spans()
    leaf, failed, sdk, rpc = spans
    assert isinstance(streamed, tracing._Leaf)
    for span in (leaf, failed):
        assert span.parent.span_id == rpc.context.span_id
        assert span.context.trace_id == rpc.context.trace_id
        assert span.context.span_id not in (rpc.context.span_id, sdk.context.span_id)
        assert span.context.trace_flags == sdk.context.trace_flags
        assert span.context.trace_flags.sampled
        assert span.kind == sdk.kind == SpanKind.INTERNAL
        assert span.resource is sdk.resource
        assert span.resource.attributes["service.name"] == "rowforge"
        assert span.instrumentation_scope.name == sdk.instrumentation_scope.name
        assert rpc.start_time <= span.start_time <= span.end_time <= rpc.end_time
    assert dict(leaf.attributes) == {"model": "m", "streamed": False}
    assert leaf.status.status_code == StatusCode.UNSET
    assert failed.status.status_code == StatusCode.ERROR
    assert failed.status.description == "DEADLINE_EXCEEDED"
    assert len({s.context.span_id for s in spans}) == 4
    assert leaf.to_json()  # what the console exporter writes


def test_leaves_follow_a_ratio_samplers_decision(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.5")
    exporter = _configure(monkeypatch, "traceidratio")
    for _ in range(200):
        with tracing.rpc_span("/rowforge.v1.TableService/AddRows", {}), \
                tracing.leaf("provider.chat", model="m"):
            pass
    spans = exporter.get_finished_spans()
    kept = {s.context.trace_id for s in spans if s.name.startswith("/")}
    leaves = {s.context.trace_id for s in spans if s.name == "provider.chat"}
    assert 40 < len(kept) < 160  # the sampler did drop some and keep some
    assert leaves == kept


def test_a_span_with_children_marks_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    exporter = _configure(monkeypatch, "parentbased_always_on")
    with pytest.raises(KeyError), tracing.span("knowledge.search", k=10):
        with tracing.leaf("provider.embed", model="m"):
            pass
        raise KeyError("no such column")
    leaf, search = exporter.get_finished_spans()
    assert leaf.parent.span_id == search.context.span_id
    assert search.status.status_code == StatusCode.ERROR
    assert search.status.description == "KeyError"
    assert dict(search.attributes) == {"k": 10}


def test_leaves_find_their_parent_through_nesting_and_tasks(
        monkeypatch: pytest.MonkeyPatch) -> None:
    exporter = _configure(monkeypatch, "parentbased_always_on")

    async def in_a_task() -> None:  # a row's task, created inside the RPC
        with tracing.leaf("provider.chat", model="m"):
            pass

    async def rpc() -> None:
        with tracing.rpc_span("/rowforge.v1.TableService/StreamAddRows", {}):
            with tracing.span("knowledge.search", k=1), tracing.leaf("provider.embed", model="e"):
                pass
            await asyncio.create_task(in_a_task())
            with tracing.leaf("db.write"):  # the search span is no longer current
                pass

    asyncio.run(rpc())
    spans = {s.name: s for s in exporter.get_finished_spans()}
    server = spans["/rowforge.v1.TableService/StreamAddRows"]
    assert spans["provider.embed"].parent.span_id == spans["knowledge.search"].context.span_id
    for name in ("knowledge.search", "provider.chat", "db.write"):
        assert spans[name].parent.span_id == server.context.span_id
        assert spans[name].context.trace_id == server.context.trace_id
    assert tracing._PARENT.get() is None  # nothing left behind
    with tracing.leaf("provider.chat", model="m"):  # outside: a trace of its own
        pass
    assert exporter.get_finished_spans()[-1].parent is None


def test_a_span_made_current_by_the_api_is_a_leafs_parent(
        monkeypatch: pytest.MonkeyPatch) -> None:
    exporter = _configure(monkeypatch, "parentbased_always_on")
    with tracing._tracer.start_as_current_span("from elsewhere"), tracing.leaf("db.write"):
        pass
    leaf, outer = exporter.get_finished_spans()
    assert leaf.parent.span_id == outer.context.span_id
    assert leaf.context.trace_id == outer.context.trace_id
