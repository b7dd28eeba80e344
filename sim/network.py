"""A seeded packet simulator: per-link delay, jitter, loss, duplication, reordering, bandwidth
and symmetric or asymmetric partitions.

The network decides *when* (or whether) a packet sent at virtual time ``now`` from ``src`` to
``dst`` arrives, using its own ``random.Random`` so that its draws never shift another concern's.
A packet is dropped if its directed link is blocked when it is sent or when it would arrive (a
cut cable also loses what is in flight). It does not deliver anything itself: ``sim.cluster``
asks it for arrival times and schedules the deliveries.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

from consensus.core import NodeId

from .scenario import LinkSpec

US_PER_MS = 1_000


class Network:
    """Link behaviour and partitions between a fixed set of nodes."""

    def __init__(self, nodes: Iterable[NodeId], rng: random.Random, default: LinkSpec) -> None:
        self.nodes: tuple[NodeId, ...] = tuple(sorted(nodes))
        self.rng = rng
        self.default = default
        self._links: dict[tuple[NodeId, NodeId], LinkSpec] = {}
        self._blocked: set[tuple[NodeId, NodeId]] = set()
        self._busy_until: dict[tuple[NodeId, NodeId], int] = {}
        self.sent = 0
        self.dropped = 0
        self.duplicated = 0
        self.bytes_sent = 0

    # ---- link behaviour ---------------------------------------------------------------------

    def link(self, src: NodeId, dst: NodeId) -> LinkSpec:
        """The spec in force on the directed link ``src -> dst``."""
        return self._links.get((src, dst), self.default)

    def set_default(self, spec: LinkSpec) -> None:
        """Change the spec of every link that has no override."""
        self.default = spec

    def set_link(self, src: NodeId, dst: NodeId, spec: LinkSpec | None) -> None:
        """Override one directed link (``None`` removes the override)."""
        if spec is None:
            self._links.pop((src, dst), None)
        else:
            self._links[(src, dst)] = spec

    # ---- partitions -------------------------------------------------------------------------

    def blocked(self, src: NodeId, dst: NodeId) -> bool:
        """True when packets from ``src`` to ``dst`` are dropped."""
        return (src, dst) in self._blocked

    def block(self, src: NodeId, dst: NodeId) -> None:
        """Cut one direction only (an asymmetric partition)."""
        if src != dst:
            self._blocked.add((src, dst))

    def partition(self, groups: Iterable[Iterable[NodeId]]) -> None:
        """Symmetric partition: nodes in different groups cannot reach each other.

        Nodes named in no group are left as they are.
        """
        gs = [sorted(g) for g in groups]
        for i, a in enumerate(gs):
            for j, b in enumerate(gs):
                if i != j:
                    for x in a:
                        for y in b:
                            self.block(x, y)

    def isolate(self, node: NodeId) -> None:
        """Cut a node off from every other node in both directions."""
        others = [n for n in self.nodes if n != node]
        self.partition([[node], others])

    def heal(self, among: Iterable[NodeId] | None = None) -> None:
        """Remove every cut (or only the cuts between nodes of ``among``)."""
        if among is None:
            self._blocked.clear()
            return
        keep = set(among)
        self._blocked = {(a, b) for (a, b) in self._blocked if not (a in keep and b in keep)}

    def cuts(self) -> list[tuple[NodeId, NodeId]]:
        """The blocked directed links, sorted."""
        return sorted(self._blocked)

    # ---- sending ----------------------------------------------------------------------------

    def arrivals(
        self, src: NodeId, dst: NodeId, now: int, size: int, reliable: bool = False
    ) -> list[int]:
        """Virtual arrival times of one packet of ``size`` bytes sent at ``now``.

        Empty when the packet is lost or the link is cut; two times when it is duplicated.
        ``reliable`` (a stream, e.g. TCP push-pull) is never lost, duplicated or held back for
        reordering, but is still delayed, serialised and cut by partitions.
        """
        self.sent += 1
        self.bytes_sent += size
        if (src, dst) in self._blocked:
            self.dropped += 1
            return []
        spec = self._links.get((src, dst), self.default)
        rng = self.rng
        if reliable:
            spec = LinkSpec(spec.delay_ms, spec.jitter_ms, bandwidth_bps=spec.bandwidth_bps)
        if spec.loss and rng.random() < spec.loss:
            self.dropped += 1
            return []
        start = now
        if spec.bandwidth_bps is not None:
            key = (src, dst)
            start = max(now, self._busy_until.get(key, 0))
            start += int(size * 1_000_000 / spec.bandwidth_bps)
            self._busy_until[key] = start
        copies = 1
        if spec.duplicate and rng.random() < spec.duplicate:
            copies = 2
            self.duplicated += 1
        out = []
        for _ in range(copies):
            delay = spec.delay_ms
            if spec.jitter_ms:
                delay += rng.random() * spec.jitter_ms
            if spec.reorder and rng.random() < spec.reorder:
                delay += rng.random() * spec.reorder_ms
            out.append(start + int(delay * US_PER_MS))
        return out
