"""Counting what the mesh refuses: every dropped frame has one reason.

``DropCounters`` is a plain object the transports increment; ``DropCounters.collector()`` exposes
it to a node's prometheus registry as ``moltmesh_mesh_dropped_frames_total{transport, reason}``.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector


class DropReason(enum.StrEnum):
    """Why a frame or datagram was dropped. The values are metric label values."""

    GARBAGE = "garbage"  # undecodable, truncated, inconsistent
    OVERSIZE = "oversize"  # larger than the hard limit
    WRONG_MESH = "wrong_mesh"  # well-formed, but for another mesh (or protocol version)
    WRONG_KEY = "wrong_key"  # unknown key id or authentication failed
    REPLAY = "replay"  # a counter already seen, or from an older boot
    REVOKED = "revoked"  # the sender's node id is revoked


class Transport(enum.StrEnum):
    UDP = "udp"
    TCP = "tcp"


class DropCounters:
    """Thread-safe counts of dropped input by (transport, reason)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[Transport, DropReason], int] = {
            (t, r): 0 for t in Transport for r in DropReason
        }
        self.listeners: list[Callable[[Transport, DropReason], None]] = []
        """Called after each count (on the counting thread); for tests and log hooks."""

    def add(self, transport: Transport, reason: DropReason, n: int = 1) -> None:
        with self._lock:
            self._counts[(transport, reason)] += n
        for listener in self.listeners:
            listener(transport, reason)

    def get(self, reason: DropReason, transport: Transport | None = None) -> int:
        """The count for ``reason`` on one transport, or on both when ``transport`` is None."""
        with self._lock:
            return sum(
                v for (t, r), v in self._counts.items()
                if r is reason and (transport is None or t is transport)
            )  # fmt: skip

    def snapshot(self) -> dict[tuple[str, str], int]:
        """A copy of every count, keyed by (transport, reason) label values."""
        with self._lock:
            return {(t.value, r.value): v for (t, r), v in self._counts.items()}

    def total(self) -> int:
        with self._lock:
            return sum(self._counts.values())

    def collector(self) -> Collector:
        """A prometheus collector; register it with ``registry.register(...)``."""
        return _DropCollector(self)


class _DropCollector(Collector):
    def __init__(self, counters: DropCounters) -> None:
        self._counters = counters

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "moltmesh_mesh_dropped_frames",
            "Mesh frames and datagrams dropped, by transport and reason.",
            labels=["transport", "reason"],
        )
        for (transport, reason), value in sorted(self._counters.snapshot().items()):
            family.add_metric([transport, reason], value)
        yield family
