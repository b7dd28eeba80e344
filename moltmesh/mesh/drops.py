"""Counting what the mesh refuses: every dropped frame, datagram and refused connection has one
reason.

``DropCounters`` is a plain object the transports increment; ``DropCounters.collector()`` exposes
it to a node's prometheus registry as ``moltmesh_mesh_dropped_frames_total{transport, reason}``.
Refused TCP connections (limits, failed TLS handshakes, refused joins) are counted there too, one
per connection, under the ``tcp`` transport.
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
    FUTURE_EPOCH = "future_epoch"  # a boot epoch too far ahead of our clock (forged, bad clock)
    REVOKED = "revoked"  # the sender's node id is revoked
    # connections refused at accept (streams.MeshStreams, conn_limits.ConnGate)
    CONN_LIMIT = "conn_limit"  # inbound connections (in handshake + established) at the cap
    CONN_PER_IP = "conn_per_ip"  # one source address holds its share of the cap already
    HANDSHAKE_LIMIT = "handshake_limit"  # too many connections in the TLS handshake (or per IP)
    # TLS handshakes that failed
    NOT_TLS = "not_tls"  # the first bytes were not a TLS 1.3 client hello
    NO_CERT = "no_certificate"  # no client certificate where one is required
    BAD_CERT = "bad_certificate"  # a certificate not issued by this mesh's CA (or self-signed)
    HANDSHAKE_TIMEOUT = "handshake_timeout"  # the handshake did not finish in time
    TLS_FAILED = "tls_failed"  # any other handshake failure (peer closed mid-handshake, ...)
    # connections without a certificate (the join path, CA holders only)
    JOIN_LIMIT = "join_limit"  # the join slots (or one source address's share) are taken
    JOIN_TIMEOUT = "join_timeout"  # no join hello before the short hello deadline
    JOIN_UNKNOWN_TOKEN = "join_unknown_token"
    JOIN_TOKEN_USED = "join_token_used"
    JOIN_TOKEN_EXPIRED = "join_token_expired"
    JOIN_WRONG_SECRET = "join_wrong_secret"
    JOIN_REFUSED = "join_refused"  # any other refusal (revoked node, key/id mismatch, bad CSR)


FRAME_REASONS = (
    DropReason.GARBAGE, DropReason.OVERSIZE, DropReason.WRONG_MESH, DropReason.WRONG_KEY,
    DropReason.REPLAY, DropReason.FUTURE_EPOCH, DropReason.REVOKED,
)  # fmt: skip
"""The reasons that apply to frames and datagrams; the others are about TCP connections."""


class Transport(enum.StrEnum):
    UDP = "udp"
    TCP = "tcp"


class DropCounters:
    """Thread-safe counts of dropped input by (transport, reason)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[Transport, DropReason], int] = {
            (t, r): 0 for t in Transport for r in DropReason
            if t is Transport.TCP or r in FRAME_REASONS
        }  # fmt: skip
        self.listeners: list[Callable[[Transport, DropReason], None]] = []
        """Called after each count (on the counting thread); for tests and log hooks."""

    def add(self, transport: Transport, reason: DropReason, n: int = 1) -> None:
        """Count ``n`` drops (connection reasons exist for TCP only: ``KeyError`` for UDP)."""
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
            "Mesh frames, datagrams and TCP connections dropped, by transport and reason.",
            labels=["transport", "reason"],
        )
        for (transport, reason), value in sorted(self._counters.snapshot().items()):
            family.add_metric([transport, reason], value)
        yield family
