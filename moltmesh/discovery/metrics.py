"""Discovery's figures for a node's prometheus registry.

    registry.register(DiscoveryCollector(discovery))

exposes ``moltmesh_discovery_events_total{kind}`` (found, updated, goodbye),
``moltmesh_discovery_ignored_total{reason}`` (malformed, unresolved, dropped_event) and the gauges
``moltmesh_discovery_candidates`` and ``moltmesh_discovery_foreign_peers``.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from moltmesh.discovery.service import Discovery


class DiscoveryCollector(Collector):
    """Reads a ``Discovery``'s stats at scrape time; never changes them."""

    def __init__(self, discovery: Discovery) -> None:
        self._discovery = discovery

    def collect(self) -> Iterator[Metric]:
        stats = self._discovery.stats
        events = CounterMetricFamily(
            "moltmesh_discovery_events",
            "Candidate events reported by mDNS discovery, by kind.",
            labels=["kind"],
        )
        for kind, value in (
            ("found", stats.found),
            ("updated", stats.updated),
            ("goodbye", stats.goodbyes),
        ):
            events.add_metric([kind], value)
        yield events
        ignored = CounterMetricFamily(
            "moltmesh_discovery_ignored",
            "mDNS answers ignored by discovery, by reason.",
            labels=["reason"],
        )
        for reason, value in (
            ("malformed", stats.malformed),
            ("unresolved", stats.unresolved),
            ("dropped_event", stats.dropped_events),
        ):
            ignored.add_metric([reason], value)
        yield ignored
        yield GaugeMetricFamily(
            "moltmesh_discovery_candidates",
            "Peers of this mesh currently seen by mDNS (hints, not members).",
            value=len(self._discovery.candidates()),
        )
        yield GaugeMetricFamily(
            "moltmesh_discovery_foreign_peers",
            "Peers of other meshes currently seen by mDNS.",
            value=len(self._discovery.foreign()),
        )
