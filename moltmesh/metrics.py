"""Prometheus metrics of one node, in a registry of its own.

A registry per node (not the process-global default) lets several nodes live in one process —
tests and embedding apps — without clashing. ``render()`` gives the text exposition format.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
)  # fmt: skip


class NodeMetrics:
    """All metrics a node exports. Attribute names match the metric they hold."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        r = self.registry
        self.requests = Counter(
            "moltmesh_requests",
            "Inference requests by model ('unknown': not served here), route and HTTP status "
            "(499: the client left first).",
            ["model", "route", "status"], registry=r,
        )  # fmt: skip
        self.request_seconds = Histogram(
            "moltmesh_request_seconds", "Whole inference request latency, admission to answer.",
            ["model"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.inference_seconds = Histogram(
            "moltmesh_inference_seconds", "Model execution time alone.",
            ["model", "variant"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.batch_requests = Histogram(
            "moltmesh_batch_requests", "Requests stacked into one batched run (dynamic batching).",
            ["model"], buckets=(2, 4, 8, 16, 32, 64, 128), registry=r,
        )  # fmt: skip
        self.queue_depth = Gauge(
            "moltmesh_queue_depth",
            "Requests admitted and waiting for an execution slot or their batch.",
            registry=r,
        )  # fmt: skip
        self.inflight = Gauge(
            "moltmesh_inflight", "Runs executing now (a batch of requests is one run).", registry=r
        )
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
