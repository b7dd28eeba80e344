"""The node's metrics registry renders the per-request series in the Prometheus text format."""

from __future__ import annotations

from moltmesh.metrics import NodeMetrics


def test_node_metrics_render_request_series():
    metrics = NodeMetrics()
    metrics.requests.labels("m", "local", "200").inc()
    metrics.request_seconds.labels("m").observe(0.002)
    metrics.inference_seconds.labels("m", "full").observe(0.001)
    text = metrics.render().decode()
    assert 'moltmesh_requests_total{model="m",route="local",status="200"} 1.0' in text
    assert 'moltmesh_request_seconds_bucket{le="0.0025",model="m"} 1.0' in text
    assert 'moltmesh_inference_seconds_count{model="m",variant="full"} 1.0' in text
