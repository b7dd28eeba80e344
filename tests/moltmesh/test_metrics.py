"""The node's metrics registry renders the per-request series in the Prometheus text format."""

from __future__ import annotations

from moltmesh.metrics import LATENCY_BUCKETS, NodeMetrics, incrementer, observer


def test_node_metrics_render_request_series():
    metrics = NodeMetrics()
    metrics.requests.labels("m", "local", "200").inc()
    metrics.request_seconds.labels("m").observe(0.002)
    metrics.inference_seconds.labels("m", "full").observe(0.001)
    text = metrics.render().decode()
    assert 'moltmesh_requests_total{model="m",route="local",status="200"} 1.0' in text
    assert 'moltmesh_request_seconds_bucket{le="0.0025",model="m"} 1.0' in text
    assert 'moltmesh_inference_seconds_count{model="m",variant="full"} 1.0' in text


def test_observer_and_incrementer_update_children_as_their_own_methods_do():
    fast, slow = NodeMetrics(), NodeMetrics()
    observe = observer(fast.request_seconds.labels("m"))
    inc = incrementer(fast.requests.labels("m", "local", "200"))
    # every bucket bound exactly (``le`` is inclusive), either side of it, and past the last
    values = [b + d for b in LATENCY_BUCKETS for d in (-1e-9, 0.0, 1e-9)] + [0.0, 11.0, 1e9]
    for value in values:
        observe(value)
        slow.request_seconds.labels("m").observe(value)
        inc()
        slow.requests.labels("m", "local", "200").inc()
    assert _same_samples(fast, slow)


def _same_samples(a: NodeMetrics, b: NodeMetrics) -> bool:
    def samples(m: NodeMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in m.registry.collect()
            if family.name.startswith("moltmesh_request")
            for s in family.samples
            if not s.name.endswith("_created")
        }

    got, want = samples(a), samples(b)
    assert got == want
    return True


def test_observer_falls_back_to_observe_on_an_unknown_child():
    class Child:
        def __init__(self) -> None:
            self.seen: list[float] = []

        def observe(self, value: float) -> None:
            self.seen.append(value)

        def inc(self) -> None:
            self.seen.append(1.0)

    child = Child()
    observer(child)(0.5)
    incrementer(child)()
    assert child.seen == [0.5, 1.0]
