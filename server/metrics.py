"""Prometheus metrics of one server process, served on a port of their own (``metrics_port``).

gRPC server metrics carry the names and labels of grpc-ecosystem's go-grpc-prometheus
interceptors (``grpc_server_started_total``, ``grpc_server_handled_total``,
``grpc_server_handling_seconds``), so existing dashboards work; domain metrics are prefixed
``rowforge_``. Labels are bounded: services, methods, codes, model ids (from the config),
column kinds and outcomes; never table, row, job or project ids.

A disabled :class:`Metrics` (the default) records nothing: every method returns at once.
"""

from __future__ import annotations

import logging
import time
from bisect import bisect_left
from collections.abc import Callable
from typing import Any

log = logging.getLogger("rowforge.server")

#: Histogram buckets (seconds) of RPCs and model calls.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
           30.0, 60.0, 120.0)
_TYPES = {(False, False): "unary", (True, False): "client_stream",
          (False, True): "server_stream", (True, True): "bidi_stream"}


class Metrics:
    """The process's metrics (see the module docstring).

    Args:
        enabled: Record and serve metrics (False: every method is a no-op).
    """

    def __init__(self, enabled: bool = False) -> None:
        self.enabled = enabled
        self._rpc: dict[str, tuple[Any, Any, dict[str, Any], str, str, str]] = {}
        # Label children looked up once per label set.
        self._children: dict[tuple[Any, ...], Any] = {}
        self._server: Any = None
        if not enabled:
            return
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        from rowforge.server.metric_values import LoopCollector, LoopCounter, LoopHistogram

        self.registry = CollectorRegistry()
        # Updated on every RPC, model call and cell: plain values on the event loop's thread
        # (see metric_values); the rare ones below are prometheus-client's own.
        loop = LoopCollector(self.registry)
        rpc = ["grpc_type", "grpc_service", "grpc_method"]
        self.started = loop.add(LoopCounter("grpc_server_started_total",
                                            "RPCs started on the server.", rpc))
        self.handled = loop.add(LoopCounter(
            "grpc_server_handled_total",
            "RPCs completed on the server, regardless of success or failure.",
            [*rpc, "grpc_code"]))
        self.handling = loop.add(LoopHistogram("grpc_server_handling_seconds",
                                               "Response latency of RPCs handled by the server.",
                                               rpc, buckets=BUCKETS))
        self.in_flight = Gauge("rowforge_rpcs_in_flight", "RPCs being served.",
                               registry=self.registry)
        self.provider_calls = loop.add(LoopCounter(
            "rowforge_provider_calls_total", "Model calls by model, operation and outcome.",
            ["model", "op", "outcome"]))
        self.provider_seconds = loop.add(LoopHistogram(
            "rowforge_provider_call_seconds", "Model call latency.", ["model", "op"],
            buckets=BUCKETS))
        self.provider_tokens = loop.add(LoopCounter("rowforge_provider_tokens_total",
                                                    "Tokens of model calls.", ["model", "kind"]))
        self.provider_cost = loop.add(LoopCounter(
            "rowforge_provider_cost_usd_total",
            "Cost of model calls in US dollars (litellm's price map).", ["model"]))
        self.cells = loop.add(LoopCounter("rowforge_cells_total",
                                          "Generated cells by column kind and status.",
                                          ["kind", "status"]))
        self.search_seconds = loop.add(LoopHistogram("rowforge_knowledge_search_seconds",
                                                     "Hybrid search latency.", buckets=BUCKETS))
        self._search = self.search_seconds.child()
        self.batch_recorded = Counter("rowforge_batch_results_recorded_total",
                                      "Batch request outcomes recorded.",
                                      registry=self.registry)
        self.batch_retries = Counter("rowforge_batch_retries_total",
                                     "Batch requests put back for a retry.",
                                     registry=self.registry)
        self.index_load_seconds = Histogram(
            "rowforge_knowledge_index_load_seconds",
            "Time to open a knowledge table's indexes (saved files + catch-up, or a rebuild), "
            "by whether it had been evicted under the memory budget.", ["evicted"],
            buckets=BUCKETS, registry=self.registry)
        self.index_evictions = Counter("rowforge_knowledge_index_evictions_total",
                                       "Knowledge indexes saved and evicted under the memory "
                                       "budget.", registry=self.registry)
        self.index_memory = Gauge("rowforge_knowledge_index_memory_bytes",
                                  "Estimated memory of the resident knowledge indexes' graphs.",
                                  registry=self.registry)

    # -- serving ---------------------------------------------------------------------------

    def serve(self, host: str, port: int) -> int:
        """Serve ``/metrics`` over HTTP on ``host:port`` (a thread); return the bound port."""
        if not self.enabled:
            return 0
        from prometheus_client import start_http_server

        self._server, thread = start_http_server(port, addr=host, registry=self.registry)
        bound = int(self._server.server_address[1])
        log.info("metrics served", extra={"address": f"{host}:{bound}"})
        del thread
        return bound

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # -- gRPC ------------------------------------------------------------------------------

    def count_in_flight(self, count: Callable[[], int]) -> None:
        """Read ``rowforge_rpcs_in_flight`` from ``count`` at each scrape (the interceptor
        keeps that count for its cap anyway)."""
        if self.enabled:
            self.in_flight.set_function(count)

    def rpc_started(self, method: str, client_streaming: bool, server_streaming: bool) -> float:
        """Count an RPC in; returns its start time (0.0 when disabled)."""
        if not self.enabled:
            return 0.0
        entry = self._rpc.get(method)
        if entry is None:
            _, service, name = method.split("/", 2)
            kind = _TYPES[(client_streaming, server_streaming)]
            entry = (self.started.child(kind, service, name),
                     self.handling.child(kind, service, name), {}, kind, service, name)
            self._rpc[method] = entry
        entry[0][0] += 1
        return time.perf_counter()

    def rpc_handled(self, method: str, code: str, started: float) -> None:
        if not self.enabled:
            return
        seconds = time.perf_counter() - started
        _, latency, by_code, kind, service, name = self._rpc[method]
        counter = by_code.get(code)
        if counter is None:
            counter = by_code[code] = self.handled.child(kind, service, name, code)
        counter[0] += 1
        latency[bisect_left(BUCKETS, seconds)] += 1  # the histograms' bounds are BUCKETS
        latency[-1] += seconds

    # -- domains ---------------------------------------------------------------------------

    def provider_call(self, model: str, op: str, outcome: str, seconds: float, *,
                      prompt_tokens: int = 0, completion_tokens: int = 0,
                      cost_usd: float | None = None) -> None:
        """One model call (``op``: chat, embed, rerank; ``outcome``: ok or an error code)."""
        if not self.enabled:
            return
        key = ("provider", model, op, outcome)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self.provider_calls.child(model, op, outcome),
                self.provider_seconds.child(model, op),
                self.provider_tokens.child(model, "prompt"),
                self.provider_tokens.child(model, "completion"),
                self.provider_cost.child(model))
        calls, latency, prompt, completion, cost = children
        calls[0] += 1
        latency[bisect_left(BUCKETS, seconds)] += 1
        latency[-1] += seconds
        if prompt_tokens:
            prompt[0] += prompt_tokens
        if completion_tokens:
            completion[0] += completion_tokens
        if cost_usd:
            cost[0] += cost_usd

    def cell(self, kind: str, status: str) -> None:
        if not self.enabled:
            return
        child = self._children.get(("cell", kind, status))
        if child is None:
            child = self._children[("cell", kind, status)] = self.cells.child(kind, status)
        child[0] += 1

    def batch_flushed(self, recorded: int, retries: int) -> None:
        if self.enabled:
            self.batch_recorded.inc(recorded)
            self.batch_retries.inc(retries)

    def search(self, seconds: float) -> None:
        if self.enabled:
            self._search[bisect_left(BUCKETS, seconds)] += 1
            self._search[-1] += seconds

    def index_loaded(self, seconds: float, *, evicted: bool) -> None:
        if self.enabled:
            self.index_load_seconds.labels("true" if evicted else "false").observe(seconds)

    def index_evicted(self) -> None:
        if self.enabled:
            self.index_evictions.inc()

    def index_memory_from(self, read: Callable[[], int]) -> None:
        """Read ``rowforge_knowledge_index_memory_bytes`` from ``read`` at each scrape."""
        if self.enabled:
            self.index_memory.set_function(read)


#: The metrics of code that was not given any (records nothing).
DISABLED = Metrics(False)
