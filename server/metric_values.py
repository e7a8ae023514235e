"""Counters and histograms for the hot paths (every RPC, model call and cell), without
prometheus-client's per-update cost.

prometheus-client's ``Counter.inc`` and ``Histogram.observe`` check the metric, call into a
value object and take a lock on every update: ~37 Python calls per StreamAddRows row, 4.6% of
a row's instructions (bench/bench_metrics.py). Here a labelled child is a plain list updated
in place (``child[0] += 1``; a histogram's bucket counts and sum), and a collector registered
in the registry turns them into metric families when ``/metrics`` is scraped.

Updated only from the event loop's thread (every caller is async code on the loop), so no
lock is needed; the scrape (the HTTP server's thread) copies each list in one C call under
the GIL, and a histogram's count is its +Inf bucket, so it always matches its buckets.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString


class LoopCounter:
    """A counter family; :meth:`child` gives the one-element list to add to.

    Args:
        name: The family name, ``_total`` included (as prometheus-client's ``Counter``).
    """

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> None:
        self.name = name.removesuffix("_total")
        self.documentation, self.labelnames = documentation, tuple(labelnames)
        self._children: dict[tuple[str, ...], tuple[list[float], float]] = {}

    def child(self, *labels: str) -> list[float]:
        """The value of one label set (``child[0] += n`` counts ``n``)."""
        found = self._children.get(labels)
        if found is None:
            found = self._children[labels] = ([0.0], time.time())
        return found[0]

    def collect(self) -> Metric:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, (value, created) in list(self._children.items()):
            family.add_metric(labels, value[0], created=created)
        return family


class LoopHistogram:
    """A histogram family; :meth:`child` gives the list to record in: a value ``v`` adds 1
    at ``bisect_left(bounds, v)`` (its bucket; the last is +Inf) and ``v`` at ``[-1]``."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = (), *,
                 buckets: Sequence[float]) -> None:
        self.name, self.documentation, self.labelnames = name, documentation, tuple(labelnames)
        self.bounds = tuple(float(b) for b in buckets)
        self._le = [floatToGoString(b) for b in self.bounds] + ["+Inf"]
        self._children: dict[tuple[str, ...], tuple[list[float], float]] = {}

    def child(self, *labels: str) -> list[float]:
        """One label set's bucket counts (one per bound, then +Inf), then the sum."""
        found = self._children.get(labels)
        if found is None:
            found = self._children[labels] = ([0.0] * (len(self.bounds) + 2), time.time())
        return found[0]

    def collect(self) -> Metric:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, (values, created) in list(self._children.items()):
            counts = values[:]  # one copy: the loop may add to it meanwhile
            cumulative, running = [], 0.0
            for le, count in zip(self._le, counts, strict=False):
                running += count
                cumulative.append((le, running))
            family.add_metric(labels, cumulative, counts[-1])
            family.samples.append(Sample(self.name + "_created",
                                         dict(zip(self.labelnames, labels, strict=True)),
                                         created))
        return family


class LoopCollector(Collector):
    """Exposes :class:`LoopCounter` and :class:`LoopHistogram` families in a registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.families: list[LoopCounter | LoopHistogram] = []
        registry.register(self)

    def add(self, family: Any) -> Any:
        self.families.append(family)
        return family

    def collect(self) -> Iterator[Metric]:
        for family in self.families:
            yield family.collect()

    def describe(self) -> Iterator[Metric]:
        return iter(())  # no name-clash check at registration; names are ours
