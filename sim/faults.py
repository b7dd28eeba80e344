"""Random fault injection for a safety phase: crashes with restarts, symmetric and asymmetric
partitions, clock drift changes. Generic over the core kind (it only uses ``Cluster`` and
``Network``).

All draws come from the ``random.Random`` handed in (the run's ``faults`` stream), so the fault
schedule is a pure function of the seed and of the events so far. ``stop()`` freezes the faults:
every pending fault event (crash, restart, heal) becomes a no-op, leaving crashed nodes down and
cuts in place, so that the liveness phase decides explicitly what it heals.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from consensus.core import NodeId

from .cluster import Cluster, ms
from .scenario import FaultSpec


@dataclass(frozen=True, slots=True)
class Cut:
    """One active partition: the directed links it blocks."""

    pairs: tuple[tuple[NodeId, NodeId], ...]
    label: str


class FaultInjector:
    """Schedules the faults of one ``FaultSpec`` on a cluster until ``stop()``."""

    def __init__(self, cluster: Cluster, spec: FaultSpec, rng: random.Random) -> None:
        self.cluster = cluster
        self.spec = spec
        self.rng = rng
        self.active = False
        self.cuts: list[Cut] = []
        self.crashes = 0
        self.partitions = 0
        self.drifts = 0

    def start(self) -> None:
        """Begin injecting from the cluster's current time."""
        self.active = True
        if self.spec.crash_every_ms > 0:
            self._schedule(self.spec.crash_every_ms, self._crash)
        if self.spec.partition_every_ms > 0:
            self._schedule(self.spec.partition_every_ms, self._partition)
        if self.spec.drift_every_ms > 0 and self.spec.drift_ppm > 0:
            self._schedule(self.spec.drift_every_ms, self._drift)

    def stop(self) -> None:
        """Stop injecting; pending restarts and heals are cancelled (see module docstring)."""
        self.active = False

    def _schedule(self, mean_ms: float, fn: object) -> None:
        delay = ms(self.rng.expovariate(1.0 / mean_ms))
        self.cluster.kernel.after(delay, fn)

    # ---- crashes ----------------------------------------------------------------------------

    def _crash(self) -> None:
        if not self.active:
            return
        up = self.cluster.up_ids()
        if up:
            victim = self.rng.choice(up)
            self.cluster.crash(victim)
            self.crashes += 1
            lo, hi = self.spec.downtime_ms
            self.cluster.kernel.after(ms(self.rng.uniform(lo, hi)), self._restart, victim)
        self._schedule(self.spec.crash_every_ms, self._crash)

    def _restart(self, node_id: NodeId) -> None:
        if self.active:
            self.cluster.restart(node_id)

    # ---- clock drift ------------------------------------------------------------------------

    def _drift(self) -> None:
        if not self.active:
            return
        up = self.cluster.up_ids()
        if up:
            node = self.rng.choice(up)
            d = self.spec.drift_ppm
            self.cluster.set_drift(node, self.rng.randint(-d, d))
            self.drifts += 1
        self._schedule(self.spec.drift_every_ms, self._drift)

    # ---- partitions -------------------------------------------------------------------------

    def _partition(self) -> None:
        if not self.active:
            return
        ids = list(self.cluster.ids)
        if len(ids) >= 2:
            cut = self._asymmetric(ids) if self.rng.random() < self.spec.asymmetric else None
            cut = cut or self._split(ids)
            self.cuts.append(cut)
            self.partitions += 1
            self._apply_cuts()
            self.cluster.trace.record(self.cluster.now, "cut", cut.label)
            lo, hi = self.spec.partition_ms
            self.cluster.kernel.after(ms(self.rng.uniform(lo, hi)), self._heal, cut)
        self._schedule(self.spec.partition_every_ms, self._partition)

    def _split(self, ids: list[NodeId]) -> Cut:
        self.rng.shuffle(ids)
        k = self.rng.randint(1, len(ids) - 1)
        a, b = sorted(ids[:k]), sorted(ids[k:])
        pairs = [(x, y) for x in a for y in b] + [(y, x) for x in a for y in b]
        return Cut(tuple(sorted(pairs)), f"split {a} | {b}")

    def _asymmetric(self, ids: list[NodeId]) -> Cut:
        node = self.rng.choice(ids)
        others = [i for i in ids if i != node]
        if self.rng.random() < 0.5:
            pairs = [(node, o) for o in others]
            label = f"{node} cannot send"
        else:
            pairs = [(o, node) for o in others]
            label = f"{node} cannot receive"
        return Cut(tuple(sorted(pairs)), label)

    def _heal(self, cut: Cut) -> None:
        if not self.active or cut not in self.cuts:
            return
        self.cuts.remove(cut)
        self._apply_cuts()
        self.cluster.trace.record(self.cluster.now, "heal", cut.label)

    def _apply_cuts(self) -> None:
        net = self.cluster.network
        net.heal()
        for cut in self.cuts:
            for src, dst in cut.pairs:
                net.block(src, dst)
