"""Prometheus metrics of one node, in a registry of its own.

A registry per node (not the process-global default) lets several nodes live in one process —
tests and embedding apps — without clashing. ``render()`` gives the text exposition format.

The three metrics every inference request writes (``moltmesh_requests``,
``moltmesh_request_seconds``, ``moltmesh_inference_seconds``) are ``LoopCounter`` and
``LoopHistogram``: written only from the node's event loop thread, so their children are plain
numbers with no lock (prometheus-client takes a lock per value per update). They expose exactly
the samples prometheus-client's ``Counter`` and ``Histogram`` would.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client import metrics as _prometheus_metrics
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

CONTENT_TYPE = CONTENT_TYPE_LATEST
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
)  # fmt: skip


def _created_series() -> bool:
    """Whether ``*_created`` samples are exported (prometheus-client's own switch)."""
    return bool(getattr(_prometheus_metrics, "_use_created", True))


class _LoopMetric(Collector):
    """A labelled metric whose children are created by ``labels`` and kept forever."""

    kind = ""

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], registry: CollectorRegistry
    ) -> None:
        self._name, self._documentation = name, documentation
        self._labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], Any] = {}  # CounterChild or HistogramChild
        registry.register(self)

    def _labels(self, values: tuple[str, ...]) -> tuple[str, ...]:
        if len(values) != len(self._labelnames):
            raise ValueError(f"{self._name} takes labels {self._labelnames}, got {values}")
        return tuple(str(v) for v in values)

    def describe(self) -> Iterable[Metric]:
        return [Metric(self._name, self._documentation, self.kind)]


class CounterChild:
    """One labelled series of a ``LoopCounter``."""

    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()

    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError("counters can only be incremented by non-negative amounts")
        self.value += amount


class LoopCounter(_LoopMetric):
    """A labelled counter for the event loop's thread only (``labels(...).inc()``)."""

    kind = "counter"

    def labels(self, *values: str) -> CounterChild:
        key = self._labels(values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = CounterChild()
        return child

    def collect(self) -> Iterable[Metric]:
        metric = Metric(self._name, self._documentation, self.kind)
        created = _created_series()
        for values, child in list(self._children.items()):
            labels = dict(zip(self._labelnames, values, strict=True))
            metric.add_sample(self._name + "_total", labels, child.value)
            if created:
                metric.add_sample(self._name + "_created", labels, child.created)
        return [metric]


class HistogramChild:
    """One labelled series of a ``LoopHistogram``."""

    __slots__ = ("bounds", "counts", "created", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds  # ends with +Inf
        self.counts = [0] * len(bounds)
        self.sum = 0.0
        self.created = time.time()

    def observe(self, amount: float) -> None:
        """Count ``amount`` in the first bucket whose upper bound is ≥ it."""
        self.counts[bisect_left(self.bounds, amount)] += 1
        self.sum += amount


class LoopHistogram(_LoopMetric):
    """A labelled histogram for the event loop's thread only (``labels(...).observe(s)``)."""

    kind = "histogram"

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        bounds = tuple(sorted(float(b) for b in buckets))
        self._bounds = bounds if bounds[-1] == float("inf") else (*bounds, float("inf"))
        super().__init__(name, documentation, labelnames, registry)

    def labels(self, *values: str) -> HistogramChild:
        key = self._labels(values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = HistogramChild(self._bounds)
        return child

    def collect(self) -> Iterable[Metric]:
        metric = Metric(self._name, self._documentation, self.kind)
        created = _created_series()
        les = [floatToGoString(b) for b in self._bounds]
        for values, child in list(self._children.items()):
            labels = dict(zip(self._labelnames, values, strict=True))
            acc = 0.0
            for le, count in zip(les, child.counts, strict=True):
                acc += count
                metric.add_sample(self._name + "_bucket", {**labels, "le": le}, acc)
            metric.add_sample(self._name + "_count", labels, acc)
            metric.add_sample(self._name + "_sum", labels, child.sum)
            if created:
                metric.add_sample(self._name + "_created", labels, child.created)
        return [metric]


class NodeMetrics:
    """All metrics a node exports. Attribute names match the metric they hold.

    ``requests``, ``request_seconds`` and ``inference_seconds`` are loop-confined (see the
    module's docstring): update them only from the event loop's thread.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        r = self.registry
        self.requests = LoopCounter(
            "moltmesh_requests", "Inference requests answered, by model, route and HTTP status.",
            ["model", "route", "status"], registry=r,
        )  # fmt: skip
        self.request_seconds = LoopHistogram(
            "moltmesh_request_seconds", "Whole inference request latency, admission to answer.",
            ["model"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.inference_seconds = LoopHistogram(
            "moltmesh_inference_seconds", "Model execution time alone.",
            ["model", "variant"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.queue_depth = Gauge(
            "moltmesh_queue_depth", "Requests admitted and waiting for an execution slot.",
            registry=r,
        )  # fmt: skip
        self.inflight = Gauge("moltmesh_inflight", "Requests executing now.", registry=r)
        self.rejected = Counter(
            "moltmesh_rejected", "Requests refused before execution, by reason.",
            ["reason"], registry=r,
        )  # fmt: skip
        self.bad_requests = Counter(
            "moltmesh_bad_requests", "HTTP requests answered with a 4xx error, by status.",
            ["status"], registry=r,
        )  # fmt: skip

    def render(self) -> bytes:
        return generate_latest(self.registry)
