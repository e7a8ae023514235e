"""The hot-path metric families of ``server/metric_values.py``: what a scrape shows equals
what prometheus-client's own Counter and Histogram show for the same updates (names, labels,
cumulative buckets, count, sum, created), and ``Metrics`` records through them."""

from __future__ import annotations

import time
from bisect import bisect_left

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from rowforge.server.metric_values import LoopCollector, LoopCounter, LoopHistogram
from rowforge.server.metrics import BUCKETS, Metrics


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples
            if not s.name.endswith("_created")}


def test_the_same_samples_as_prometheus_clients_own() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    loop = LoopCollector(ours)
    counter = loop.add(LoopCounter("x_calls_total", "Calls.", ["op"]))
    histogram = loop.add(LoopHistogram("x_seconds", "Latency.", ["op"], buckets=BUCKETS))
    reference = Counter("x_calls_total", "Calls.", ["op"], registry=theirs)
    reference_h = Histogram("x_seconds", "Latency.", ["op"], buckets=BUCKETS, registry=theirs)
    values = [0.0, 0.001, 0.0011, 0.7, 2.5, 119.0, 120.0, 500.0]
    for op in ("chat", "embed"):
        calls, latency = counter.child(op), histogram.child(op)
        for v in values:
            calls[0] += 2
            latency[bisect_left(histogram.bounds, v)] += 1
            latency[-1] += v
            reference.labels(op).inc(2)
            reference_h.labels(op).observe(v)
    assert _samples(ours) == _samples(theirs)
    assert _samples(ours)[("x_seconds_count", (("op", "chat"),))] == len(values)


def test_children_carry_their_creation_time() -> None:
    registry = CollectorRegistry()
    loop = LoopCollector(registry)
    before = time.time()
    loop.add(LoopCounter("y_total", "Y.")).child()
    loop.add(LoopHistogram("z_seconds", "Z.", buckets=(1.0,))).child()
    text = generate_latest(registry).decode()
    created = {s.name: s.value for f in text_string_to_metric_families(text)
               for s in f.samples if s.name.endswith("_created")}
    assert set(created) == {"y_created", "z_seconds_created"}
    assert all(before <= v <= time.time() for v in created.values())


def test_metrics_record_through_them() -> None:
    metrics = Metrics(True)
    method = "/rowforge.v1.TableService/StreamAddRows"
    started = metrics.rpc_started(method, False, True)
    metrics.rpc_handled(method, "OK", started - 0.003)
    metrics.provider_call("m", "chat", "ok", 0.002, prompt_tokens=3, completion_tokens=5,
                          cost_usd=0.25)
    metrics.cell("llm", "done")
    metrics.cell("llm", "done")
    metrics.search(0.04)
    samples = _samples(metrics.registry)
    rpc = (("grpc_method", "StreamAddRows"), ("grpc_service", "rowforge.v1.TableService"),
           ("grpc_type", "server_stream"))
    assert samples[("grpc_server_started_total", rpc)] == 1
    assert samples[("grpc_server_handled_total", (("grpc_code", "OK"), *rpc))] == 1
    assert samples[("grpc_server_handling_seconds_bucket", (*rpc, ("le", "0.0025")))] == 0
    assert samples[("grpc_server_handling_seconds_bucket", (*rpc, ("le", "0.005")))] == 1
    assert samples[("rowforge_provider_calls_total",
                    (("model", "m"), ("op", "chat"), ("outcome", "ok")))] == 1
    assert samples[("rowforge_provider_tokens_total", (("kind", "completion"),
                                                       ("model", "m")))] == 5
    assert samples[("rowforge_provider_cost_usd_total", (("model", "m"),))] == 0.25
    assert samples[("rowforge_provider_call_seconds_sum", (("model", "m"), ("op", "chat")))] \
        == 0.002
    assert samples[("rowforge_cells_total", (("kind", "llm"), ("status", "done")))] == 2
    assert samples[("rowforge_knowledge_search_seconds_bucket", (("le", "0.05"),))] == 1
    assert samples[("rowforge_knowledge_search_seconds_count", ())] == 1
