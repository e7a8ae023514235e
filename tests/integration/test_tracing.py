"""OpenTelemetry tracing over a real (in-process) server: one trace per RPC continuing the
caller's ``traceparent``, with the model call, database and search spans inside it; with
tracing off nothing is recorded."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from rowforge.server import tracing
from rowforge.server.app import App, Server
from rowforge.server.config import load_settings
from rowforge.v1 import knowledge_service_pb2 as kpb
from rowforge.v1 import knowledge_service_pb2_grpc, table_service_pb2_grpc
from tests.integration.generation_support import add_rows, create_table, input_col, llm_col

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
MD = (("x-project-id", "traced"), ("traceparent", f"00-{TRACE_ID}-{PARENT}-01"))


async def serving(tmp_path: Path, enabled: bool) -> AsyncIterator[tuple[Server, InMemorySpanExporter]]:
    settings = load_settings(None, data_dir=tmp_path, port=0, tracing=enabled)
    exporter = InMemorySpanExporter()
    server = Server(App(settings))
    if server.app.tracer_provider is not None:
        server.app.tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    await server.start()
    try:
        yield server, exporter
    finally:
        await server.stop(grace=1)
        tracing.configure(False)


@pytest.fixture
async def traced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                 ) -> AsyncIterator[tuple[Server, InMemorySpanExporter]]:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")  # only the in-memory exporter
    async for pair in serving(tmp_path, True):
        yield pair


async def test_an_rpc_is_one_trace_with_the_model_call_inside(traced) -> None:  # type: ignore[no-untyped-def]
    server, exporter = traced
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        tables = table_service_pb2_grpc.TableServiceStub(channel)
        await create_table(tables, MD, "t", [input_col("q"), llm_col("a", "Answer ${q}")])
        exporter.clear()
        await add_rows(tables, MD, "t", [{"q": "why?"}])
        rpc_spans = [s for s in exporter.get_finished_spans()
                     if s.name == "/rowforge.v1.TableService/AddRows"]
        assert len(rpc_spans) == 1
        rpc = rpc_spans[0]
        assert format(rpc.context.trace_id, "032x") == TRACE_ID  # the caller's trace goes on
        assert format(rpc.parent.span_id, "016x") == PARENT
        spans = {s.context.span_id: s for s in exporter.get_finished_spans()}

        def inside(span) -> bool:  # type: ignore[no-untyped-def]
            while span.parent is not None:
                if span.parent.span_id == rpc.context.span_id:
                    return True
                span = spans.get(span.parent.span_id)
                if span is None:
                    return False
            return False

        model = [s for s in spans.values() if s.name == "provider.chat"]
        assert model and all(inside(s) for s in model)
        assert model[0].attributes["model"] == "rowforge/chat"
        assert any(s.name == "db.write" and inside(s) for s in spans.values())

        exporter.clear()
        knowledge = knowledge_service_pb2_grpc.KnowledgeServiceStub(channel)
        await create_table(tables, MD, "kb", [], table_type=2)
        exporter.clear()
        await knowledge.HybridSearch(kpb.HybridSearchRequest(table_id="kb", query="q"),
                                     metadata=MD)
        names = [s.name for s in exporter.get_finished_spans()]
        assert "knowledge.search" in names and "provider.embed" in names


async def test_nothing_is_recorded_when_tracing_is_off(tmp_path: Path) -> None:
    async for server, exporter in serving(tmp_path, False):
        assert server.app.tracer_provider is None
        assert tracing.span("x") is tracing.span("y")  # one shared no-op
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            tables = table_service_pb2_grpc.TableServiceStub(channel)
            await create_table(tables, MD, "t", [input_col("q")])
        assert exporter.get_finished_spans() == ()
