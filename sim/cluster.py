"""The generic driver: N cores over a simulated network on a virtual clock.

``Cluster`` drives any core kind through its ``Adapter`` (see ``sim.adapter``) with the same
contract as the asyncio driver:

1. Activate a node (deliver a message with ``step``, fire its timer with ``tick``, or run a
   client call) at the node's *local* time (virtual time through its drifting clock).
2. Drain its outputs: take ``ready()``; persist it (after a simulated fsync delay, if any); then
   send its messages; then apply what it committed; then ``advance``. Repeat while it has more.
3. Ask ``next_deadline()`` and schedule one timer event for it (sleep-until-deadline: idle time
   is jumped over, nothing ticks at a fixed rate).

Observers (checkers, clients, metrics) are told after every persist, apply and activation, so
safety checkers run on every step. Randomness: one run seed, one ``random.Random`` per concern
(``network``, ``clock``, ``disk``, ``core:<id>:<incarnation>``), derived by ``derive_rng``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

from consensus.core import Micros, NodeId

from .adapter import Adapter, SimNode
from .clock import NodeClock
from .errors import CodecMismatch, CoreMisbehaved
from .kernel import Kernel, derive_rng
from .network import Network
from .scenario import LinkSpec
from .trace import Trace

MAX_SAME_INSTANT_TICKS = 1_000
MAX_READY_ROUNDS = 10_000
CLOCK_OFFSET_RANGE_US = 10**9
US_PER_MS = 1_000


class Observer:
    """Hooks called by the cluster; subclasses override what they need (all default to no-op)."""

    def on_boot(self, cluster: Cluster, node: SimNode) -> None:
        """``node`` has just started (first boot or restart) and been ticked once."""

    def on_crash(self, cluster: Cluster, node: SimNode) -> None:
        """``node`` has just crashed; ``node.disk`` is what survived."""

    def after_persist(self, cluster: Cluster, node: SimNode, ready: Any) -> None:
        """``ready``'s durable part is now in ``node.disk``; its messages are not yet sent."""

    def after_apply(self, cluster: Cluster, node: SimNode, ready: Any) -> None:
        """``ready``'s committed entries have been applied to ``node.app``."""

    def after_activation(self, cluster: Cluster, node: SimNode) -> None:
        """``node`` handled one step, tick, client call or fsync completion, and was drained."""


class Cluster:
    """N nodes of one core kind, a network and a kernel; see the module docstring."""

    def __init__(
        self,
        adapter: Adapter,
        node_ids: Iterable[NodeId],
        seed: int,
        link: LinkSpec | None = None,
        *,
        wire: bool = False,
        drift_ppm: int = 0,
        persist_ms: tuple[float, float] = (0.0, 0.0),
        trace_tail: int = 64,
    ) -> None:
        self.adapter = adapter
        self.seed = seed
        self.wire = wire
        self.drift_ppm = drift_ppm
        self.persist_ms = persist_ms
        self.kernel = Kernel()
        ids = sorted(node_ids)
        if len(set(ids)) != len(ids):
            raise ValueError("node ids must be unique")
        self.network = Network(ids, derive_rng(seed, "network"), link or LinkSpec())
        self.trace = Trace(trace_tail)
        self.nodes: dict[NodeId, SimNode] = {i: SimNode(i, adapter.new_disk(i)) for i in ids}
        self.ids: tuple[NodeId, ...] = tuple(ids)
        self.observers: list[Observer] = []
        self._clock_rng = derive_rng(seed, "clock")
        self._disk_rng = derive_rng(seed, "disk")
        self.delivered = 0
        self.unroutable = 0
        self._reliable: Callable[[Any], bool] | None = getattr(adapter, "reliable", None)

    # ---- time -------------------------------------------------------------------------------

    @property
    def now(self) -> Micros:
        """Virtual time in µs."""
        return self.kernel.now

    def run_until(self, end: Micros, stop: Callable[[], bool] | None = None) -> bool:
        """Run the simulation to virtual time ``end`` (or until ``stop()``); see ``Kernel``."""
        return self.kernel.run_until(end, stop)

    def run_for(self, duration: Micros, stop: Callable[[], bool] | None = None) -> bool:
        """Run for ``duration`` µs of virtual time from now."""
        return self.kernel.run_until(self.kernel.now + duration, stop)

    # ---- lifecycle --------------------------------------------------------------------------

    def add_observer(self, obs: Observer) -> None:
        """Register an observer; hooks are called in registration order."""
        self.observers.append(obs)

    def start(self, nodes: Iterable[NodeId] | None = None) -> None:
        """Boot the given nodes (default: all) at the current virtual time."""
        for i in sorted(nodes) if nodes is not None else self.ids:
            self.restart(i)

    def up_ids(self) -> list[NodeId]:
        """Ids of the nodes that are running, sorted."""
        return [i for i in self.ids if self.nodes[i].up]

    def crash(self, node_id: NodeId) -> None:
        """Stop a node: its core, timers, in-flight fsync and app state are lost."""
        node = self.nodes[node_id]
        if not node.up:
            return
        self.trace.record(self.now, "crash", node_id)
        node.up = False
        node.core = None
        node.app = None
        node.timer_at = None
        node.persisting = False
        node.incarnation += 1
        node.disk = self.adapter.crash(node_id, node.disk)
        for o in self.observers:
            o.on_crash(self, node)

    def restart(self, node_id: NodeId) -> None:
        """Boot a stopped node from its disk with a fresh clock offset and drift."""
        node = self.nodes[node_id]
        if node.up:
            return
        node.incarnation += 1
        drift = self._clock_rng.randint(-self.drift_ppm, self.drift_ppm) if self.drift_ppm else 0
        offset = self._clock_rng.randrange(CLOCK_OFFSET_RANGE_US)
        node.clock = NodeClock(self.now, offset=offset, ppm=drift)
        rng = derive_rng(self.seed, f"core:{node_id}:{node.incarnation}")
        self.trace.record(self.now, "boot", node_id, node.incarnation, drift)
        booted = self.adapter.boot(node_id, node.disk, rng, node.clock.local(self.now))
        node.core = booted.core
        node.app = booted.app
        node.up = True
        node.persisting = False
        node.timer_at = None
        self._activate(node, _tick)
        for o in self.observers:
            o.on_boot(self, node)

    def set_drift(self, node_id: NodeId, ppm: int) -> None:
        """Change a running node's clock drift from now on."""
        node = self.nodes[node_id]
        node.clock.set_drift(self.now, ppm)
        self.trace.record(self.now, "drift", node_id, ppm)
        if node.up:
            node.timer_at = None
            self._reschedule(node)

    # ---- calls into a node ------------------------------------------------------------------

    def call(self, node_id: NodeId, fn: Callable[[Any, Micros], Any]) -> Any:
        """Run ``fn(core, local_now)`` on a running node (e.g. a client's ``propose``).

        The node is drained and rescheduled afterwards even when ``fn`` raises; the exception
        (e.g. ``NotLeader``) is re-raised to the caller.
        """
        node = self.nodes[node_id]
        if not node.up:
            raise RuntimeError(f"node {node_id} is down")
        return self._activate(node, fn)

    def _activate(self, node: SimNode, fn: Callable[[Any, Micros], Any]) -> Any:
        local = node.clock.local(self.kernel.now)
        try:
            return fn(node.core, local)
        finally:
            if node.up:
                self._drain(node)
                self._reschedule(node)
                for o in self.observers:
                    o.after_activation(self, node)

    # ---- outputs ----------------------------------------------------------------------------

    def _persist_delay(self) -> Micros:
        lo, hi = self.persist_ms
        if hi <= 0:
            return 0
        return int(self._disk_rng.uniform(lo, hi) * US_PER_MS)

    def _drain(self, node: SimNode) -> None:
        core = node.core
        rounds = 0
        while not node.persisting and core.has_ready():
            rounds += 1
            if rounds > MAX_READY_ROUNDS:
                raise CoreMisbehaved(
                    f"node {node.id} produced {rounds} Readys in one activation",
                    time_us=self.now,
                )
            rd = core.ready()
            delay = self._persist_delay()
            if delay > 0:
                node.persisting = True
                self.kernel.after(delay, self._persist_done, node, node.incarnation, rd)
                return
            self._complete(node, rd)

    def _persist_done(self, node: SimNode, incarnation: int, rd: Any) -> None:
        if node.incarnation != incarnation or not node.up:
            return  # crashed during the fsync: this Ready is lost
        node.persisting = False
        self._complete(node, rd)
        self._drain(node)
        self._reschedule(node)
        for o in self.observers:
            o.after_activation(self, node)

    def _complete(self, node: SimNode, rd: Any) -> None:
        adapter = self.adapter
        adapter.persist(node, rd)
        for o in self.observers:
            o.after_persist(self, node, rd)
        for msg in adapter.messages(rd):
            self._send(msg)
        adapter.apply(node, rd, node.clock.local(self.kernel.now))
        for o in self.observers:
            o.after_apply(self, node, rd)
        adapter.advance(node, rd)

    def _send(self, msg: Any) -> None:
        src, dst = self.adapter.route(msg)
        if dst not in self.nodes:
            self.unroutable += 1
            return
        if self.wire:
            data: bytes | None = self.adapter.encode(msg)
            size = len(data)
        else:
            data = None
            size = self.adapter.size(msg)
        reliable = self._reliable is not None and self._reliable(msg)
        for when in self.network.arrivals(src, dst, self.kernel.now, size, reliable):
            self.kernel.at(when, self._deliver, src, dst, msg, data)

    def _deliver(self, src: NodeId, dst: NodeId, msg: Any, data: bytes | None) -> None:
        if self.network.blocked(src, dst):
            self.network.dropped += 1
            return
        node = self.nodes[dst]
        if not node.up:
            return
        if data is not None:
            decoded = self.adapter.decode(data)
            if decoded != msg:
                raise CodecMismatch(
                    f"{type(msg).__name__} changed on the wire:\n"
                    f"  sent {msg!r}\n  got  {decoded!r}",
                    time_us=self.now,
                )
            msg = decoded
        self.delivered += 1
        self.trace.record(self.kernel.now, "deliver", src, dst, msg)
        self._activate(node, lambda core, now: core.step(msg, now))

    # ---- timers -----------------------------------------------------------------------------

    def _reschedule(self, node: SimNode) -> None:
        if not node.up:
            return
        deadline = node.core.next_deadline()
        if deadline is None:
            node.timer_at = None
            return
        when = max(node.clock.to_virtual(deadline), self.kernel.now)
        if when == node.timer_at:
            return
        node.timer_at = when
        self.kernel.at(when, self._timer, node, node.incarnation, when)

    def _timer(self, node: SimNode, incarnation: int, when: Micros) -> None:
        if node.incarnation != incarnation or node.timer_at != when or not node.up:
            return  # stale: rescheduled, or the node restarted since
        node.timer_at = None
        if when == node.last_tick_at:
            node.same_time_ticks += 1
            if node.same_time_ticks > MAX_SAME_INSTANT_TICKS:
                raise CoreMisbehaved(
                    f"node {node.id} asked for {node.same_time_ticks} ticks at one instant "
                    "(next_deadline() does not move past now after tick)",
                    time_us=when,
                )
        else:
            node.last_tick_at = when
            node.same_time_ticks = 0
        self.trace.record(when, "tick", node.id)
        self._activate(node, _tick)

    # ---- metrics ----------------------------------------------------------------------------

    def stats(self) -> dict[str, float]:
        """Counters for reports: events, messages sent/delivered/dropped, bytes."""
        return {
            "events": self.kernel.events_run,
            "sent": self.network.sent,
            "delivered": self.delivered,
            "dropped": self.network.dropped,
            "duplicated": self.network.duplicated,
            "bytes": self.network.bytes_sent,
            "sim_s": self.kernel.now / 1e6,
        }


def _tick(core: Any, now: Micros) -> None:
    core.tick(now)


def ms(x: float) -> Micros:
    """Milliseconds (float) to integer µs, rounding up so a positive bound never becomes 0."""
    return math.ceil(x * US_PER_MS)
