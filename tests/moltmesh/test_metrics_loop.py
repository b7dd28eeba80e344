"""The loop-confined metrics expose exactly what prometheus-client's Counter/Histogram would."""

from __future__ import annotations

import re

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from moltmesh.metrics import LATENCY_BUCKETS, LoopCounter, LoopHistogram, NodeMetrics

CREATED = re.compile(r"^(\S+_created\S*) \S+$", re.M)


def exposition(registry: CollectorRegistry) -> str:
    """The text format with the creation timestamps blanked (they differ between objects)."""
    return CREATED.sub(r"\1 T", generate_latest(registry).decode())


def test_counter_and_histogram_render_like_prometheus_client():
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    c1 = LoopCounter("x_requests", "Requests.", ["model", "status"], registry=ours)
    c2 = Counter("x_requests", "Requests.", ["model", "status"], registry=theirs)
    h1 = LoopHistogram("x_seconds", "Latency.", ["model"], LATENCY_BUCKETS, registry=ours)
    h2 = Histogram("x_seconds", "Latency.", ["model"], buckets=LATENCY_BUCKETS, registry=theirs)
    # on a bound (inclusive), between bounds, below the first, above the last, zero
    values = [0.0001, 0.0003, 0.00001, 11.0, 0.0, 2.5, 0.0049999]
    for i, v in enumerate(values):
        model = "a" if i % 2 else "b"
        c1.labels(model, "200").inc()
        c2.labels(model, "200").inc()
        h1.labels(model).observe(v)
        h2.labels(model).observe(v)
    c1.labels("a", "400").inc(2)
    c2.labels("a", "400").inc(2)
    assert exposition(ours) == exposition(theirs)


def test_label_count_and_negative_increments_are_refused():
    registry = CollectorRegistry()
    counter = LoopCounter("y", "Y.", ["a", "b"], registry=registry)
    with pytest.raises(ValueError):
        counter.labels("only-one")
    with pytest.raises(ValueError):
        counter.labels("1", "2").inc(-1)


def test_node_metrics_render_request_series():
    metrics = NodeMetrics()
    metrics.requests.labels("m", "local", "200").inc()
    metrics.request_seconds.labels("m").observe(0.002)
    metrics.inference_seconds.labels("m", "full").observe(0.001)
    text = metrics.render().decode()
    assert 'moltmesh_requests_total{model="m",route="local",status="200"} 1.0' in text
    assert 'moltmesh_request_seconds_bucket{le="0.0025",model="m"} 1.0' in text
    assert 'moltmesh_inference_seconds_count{model="m",variant="full"} 1.0' in text
