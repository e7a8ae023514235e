"""Prometheus metrics over a real server: /metrics scraped after a workload holds the gRPC
series under grpc-ecosystem's names with the counts of the calls made, and the domain series
(cells, model calls, searches); with metrics off nothing listens."""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from rowforge.v1 import knowledge_service_pb2 as kpb
from rowforge.v1 import knowledge_service_pb2_grpc, table_service_pb2_grpc
from rowforge.v1 import table_service_pb2 as pb
from tests.integration.generation_support import (
    create_table,
    input_col,
    llm_col,
    stream_add_rows,
)
from tests.support.server import ServerProcess

MD = (("x-project-id", "metrics"),)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict, name: str, **labels: str) -> float:  # type: ignore[type-arg]
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[ServerProcess, int]]:
    port = free_port()
    proc = ServerProcess(tmp_path, env={"ROWFORGE_METRICS": "true",
                                        "ROWFORGE_METRICS_PORT": str(port)})
    with proc.start():
        yield proc, port


async def test_metrics_count_the_workload(served: tuple[ServerProcess, int]) -> None:
    proc, port = served
    async with grpc.aio.insecure_channel(proc.address) as channel:
        tables = table_service_pb2_grpc.TableServiceStub(channel)
        await create_table(tables, MD, "t", [input_col("q"), llm_col("a", "Answer ${q}")])
        for i in range(3):
            await stream_add_rows(tables, MD, "t", [{"q": f"question {i}"}])
        with pytest.raises(grpc.aio.AioRpcError):
            await tables.GetTable(pb.GetTableRequest(table_type=1, table_id="missing"),
                                  metadata=MD)
        knowledge = knowledge_service_pb2_grpc.KnowledgeServiceStub(channel)
        await create_table(tables, MD, "kb", [], table_type=2)
        await knowledge.HybridSearch(kpb.HybridSearchRequest(table_id="kb", query="hello"),
                                     metadata=MD)
    samples = scrape(port)
    rpc = {"grpc_service": "rowforge.v1.TableService", "grpc_type": "server_stream",
           "grpc_method": "StreamAddRows"}
    assert value(samples, "grpc_server_started_total", **rpc) == 3
    assert value(samples, "grpc_server_handled_total", grpc_code="OK", **rpc) == 3
    assert value(samples, "grpc_server_handling_seconds_count", **rpc) == 3
    assert value(samples, "grpc_server_handled_total", grpc_code="NOT_FOUND",
                 grpc_service="rowforge.v1.TableService", grpc_type="unary",
                 grpc_method="GetTable") == 1
    assert value(samples, "rowforge_cells_total", kind="llm", status="done") == 3
    assert value(samples, "rowforge_provider_calls_total", model="rowforge/chat", op="chat",
                 outcome="ok") == 3
    assert value(samples, "rowforge_provider_tokens_total", model="rowforge/chat",
                 kind="completion") > 0
    assert value(samples, "rowforge_knowledge_search_seconds_count") == 1
    assert value(samples, "rowforge_rpcs_in_flight") == 0
    # No unbounded labels: nothing names a table, row or project.
    for (_, labels) in samples:
        assert not any(v in {"t", "kb", "metrics"} for _, v in labels)


def test_metrics_are_off_by_default(tmp_path: Path) -> None:
    port = free_port()
    proc = ServerProcess(tmp_path, env={"ROWFORGE_METRICS_PORT": str(port)})
    with proc.start(), pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5)
