"""Driving SWIM cores in the simulator: the adapter, and a cluster with stalls and streams.

``SwimAdapter`` implements ``sim.adapter.Adapter`` for ``consensus.swim.SwimCore``. Nothing is
durable: a crashed member restarts as a fresh process with incarnation 0, joins through seeds
(random other members) and refutes whatever the others remember of it. A first boot either
preloads the whole membership (``bootstrap=True``: a cluster that has already converged, which
lets large runs skip the join) or joins through the seeds.

``SwimCluster`` extends ``sim.cluster.Cluster`` with what SWIM needs beyond the generic harness:

- the two transport paths: packets go through the lossy network as datagrams; push-pull streams
  are reliable (a TCP model): they fail when either direction is cut, and each loss draw on the
  link adds a retransmission timeout instead of dropping the stream;
- **stalls** (a paused process: GC, swapping, a busy CPU): a stalled node runs no timers and
  handles no messages; packets arriving meanwhile wait in its socket buffer. When the stall ends
  the timers that fell due fire first, then the buffered packets are delivered in arrival order
  (the pessimistic order: a late ack cannot save a probe whose deadline passed);
- per-path load counters (packets, bytes) for the message/byte load per member.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from consensus.core import Micros, NodeId
from consensus.swim import SwimCore
from consensus.swim_config import SwimConfig
from consensus.swim_messages import MemberState, MemberStatus, Meta, PushPull, decode, encode
from consensus.swim_types import Outgoing, SwimReady

from .adapter import Booted, SimNode
from .cluster import Cluster, _tick
from .errors import CodecMismatch
from .scenario import LinkSpec

TCP_RTO_US = 200_000
"""Retransmission timeout added to a stream per loss draw (Linux's minimum RTO)."""
TCP_MAX_RETRIES = 6
"""A stream whose segments are lost this many times in a row fails."""
SEEDS_ON_RESTART = 3
"""Random other members a restarted node uses as seeds."""


@dataclass(slots=True)
class SwimDisk:
    """What a node's host keeps across crashes: only how often it booted (to pick seeds)."""

    boots: int = 0


class SwimAdapter:
    """``sim.adapter.Adapter`` for ``SwimCore``; addresses are node ids."""

    kind = "swim"

    def __init__(
        self,
        config: SwimConfig,
        ids: Iterable[NodeId],
        *,
        bootstrap: bool = True,
        join_seeds: Sequence[NodeId] = (),
    ) -> None:
        self.config = config.validate()
        self.ids = tuple(sorted(ids))
        self.bootstrap = bootstrap
        self.join_seeds = tuple(join_seeds) or self.ids[:1]
        self._initial = tuple(
            MemberState(i, MemberStatus.ALIVE, 0, 0, Meta(address=i)) for i in self.ids
        )

    def initial_states(self) -> tuple[MemberState, ...]:
        """Every member alive at incarnation 0: a cluster that has already converged."""
        return self._initial

    def new_disk(self, node_id: NodeId) -> SwimDisk:
        return SwimDisk()

    def boot(self, node_id: NodeId, disk: SwimDisk, rng: random.Random, now: Micros) -> Booted:
        disk.boots += 1
        meta = Meta(address=node_id)
        if disk.boots == 1 and self.bootstrap:
            core = SwimCore(node_id, meta, self.config, rng, now, members=self.initial_states())
        elif disk.boots == 1:
            seeds = [s for s in self.join_seeds if s != node_id]
            core = SwimCore(node_id, meta, self.config, rng, now, seeds=seeds)
        else:
            others = [i for i in self.ids if i != node_id]
            seeds = rng.sample(others, min(SEEDS_ON_RESTART, len(others)))
            core = SwimCore(node_id, meta, self.config, rng, now, seeds=seeds)
        return Booted(core, None)

    def crash(self, node_id: NodeId, disk: SwimDisk) -> SwimDisk:
        return disk

    def persist(self, node: SimNode, ready: SwimReady) -> None:
        """Nothing to persist: SWIM state is soft."""

    def messages(self, ready: SwimReady) -> Sequence[Outgoing]:
        return [*ready.packets, *ready.streams]

    def route(self, msg: Outgoing) -> tuple[NodeId, NodeId]:
        return msg.msg.source, msg.addr

    def apply(self, node: SimNode, ready: SwimReady, now: Micros) -> None:
        """Events are read by observers (``after_apply``), which know the virtual time."""

    def advance(self, node: SimNode, ready: SwimReady) -> None:
        """SWIM has no acknowledgement of a Ready."""

    def encode(self, msg: Outgoing) -> bytes:
        return encode(msg.msg)

    def decode(self, data: bytes) -> Any:
        return decode(data)

    def size(self, msg: Outgoing) -> int:
        return msg.size


@dataclass(slots=True)
class Load:
    """Traffic counters of one path."""

    messages: int = 0
    bytes: int = 0


@dataclass(slots=True)
class _Slow:
    until: Micros
    lag: Micros | None
    incarnation: int


@dataclass(slots=True)
class _Stall:
    until: Micros
    buffer: list[tuple[NodeId, Any, bytes | None]] = field(default_factory=list)


class SwimCluster(Cluster):
    """A ``Cluster`` of SWIM cores with stalls and reliable streams (see module docstring)."""

    def __init__(
        self,
        adapter: SwimAdapter,
        seed: int,
        link: LinkSpec | None = None,
        *,
        wire: bool = False,
        trace_tail: int = 64,
    ) -> None:
        super().__init__(adapter, adapter.ids, seed, link, wire=wire, trace_tail=trace_tail)
        self.packets = Load()
        self.streams = Load()
        self.stream_failures = 0
        self._stalls: dict[NodeId, _Stall] = {}
        self._slow: dict[NodeId, _Slow] = {}
        self._inbound_free: dict[NodeId, Micros] = {}
        """Per node: when its inbound queue is next free (the last scheduled hand-over)."""

    def core(self, node_id: NodeId) -> SwimCore:
        """The running core of ``node_id`` (``RuntimeError`` if it is down)."""
        node = self.nodes[node_id]
        if not node.up:
            raise RuntimeError(f"node {node_id} is down")
        return node.core  # type: ignore[no-any-return]

    # ---- stalls -----------------------------------------------------------------------------

    def stalled(self, node_id: NodeId) -> bool:
        return node_id in self._stalls

    def stall(self, node_id: NodeId, duration: Micros) -> None:
        """Pause a running node for ``duration`` µs (extends a stall already under way)."""
        node = self.nodes[node_id]
        if not node.up:
            return
        until = self.now + duration
        current = self._stalls.get(node_id)
        if current is not None:
            current.until = max(current.until, until)
        else:
            self._stalls[node_id] = _Stall(until)
        self.trace.record(self.now, "stall", node_id, duration)
        self.kernel.at(until, self._unstall, node_id, node.incarnation)

    def _unstall(self, node_id: NodeId, incarnation: int) -> None:
        node = self.nodes[node_id]
        stall = self._stalls.get(node_id)
        if stall is None or node.incarnation != incarnation or self.now < stall.until:
            return
        del self._stalls[node_id]
        self.trace.record(self.now, "unstall", node_id)
        node.timer_at = None
        self._activate(node, _tick)
        for src, msg, data in stall.buffer:
            self._deliver(src, node_id, msg, data)

    # ---- slow members ------------------------------------------------------------------------

    def slow(self, node_id: NodeId, duration: Micros, lag: Micros | None) -> None:
        """Make a running node slow for ``duration`` µs (see module docstring): its inbound
        packets are handed over ``lag`` µs late (``None``: at the end of the period), its timers
        fire on time. A new period replaces one under way."""
        node = self.nodes[node_id]
        if not node.up:
            return
        if lag is not None and lag < 0:
            raise ValueError("lag must be >= 0")
        self._slow[node_id] = _Slow(self.now + duration, lag, node.incarnation)
        self.trace.record(self.now, "slow", node_id, duration, lag)

    def is_slow(self, node_id: NodeId) -> bool:
        """True while ``node_id`` is in a slow period (its queued backlog aside)."""
        slow = self._slow.get(node_id)
        return slow is not None and self.now < slow.until

    def _inbound_at(self, node: SimNode) -> Micros | None:
        """When a packet arriving now at ``node`` reaches its core; None for at once."""
        now = self.now
        slow = self._slow.get(node.id)
        if slow is not None and (slow.incarnation != node.incarnation or now >= slow.until):
            del self._slow[node.id]
            slow = None
        free = self._inbound_free.get(node.id)
        if slow is None:
            if free is None or free <= now:
                self._inbound_free.pop(node.id, None)
                return None
            return free  # behind the backlog of a slow period
        at = slow.until if slow.lag is None else now + slow.lag
        if free is not None and free > at:
            at = free
        self._inbound_free[node.id] = at
        return at

    def _handover(
        self, incarnation: int, src: NodeId, dst: NodeId, msg: Any, data: bytes | None
    ) -> None:
        node = self.nodes[dst]
        if node.up and node.incarnation == incarnation:  # a crash loses the queue
            self._process(src, dst, msg, data)

    def crash(self, node_id: NodeId) -> None:
        self._stalls.pop(node_id, None)
        self._slow.pop(node_id, None)
        self._inbound_free.pop(node_id, None)
        super().crash(node_id)

    # ---- transport --------------------------------------------------------------------------

    def _send(self, msg: Any) -> None:
        out: Outgoing = msg
        src, dst = out.msg.source, out.addr
        if dst not in self.nodes:
            self.unroutable += 1
            return
        data = encode(out.msg) if self.wire else None
        size = len(data) if data is not None else out.size
        if isinstance(out.msg, PushPull):
            self.streams.messages += 1
            self.streams.bytes += size
            arrivals = self._stream_arrivals(src, dst)
        else:
            self.packets.messages += 1
            self.packets.bytes += size
            arrivals = self.network.arrivals(src, dst, self.kernel.now, size)
        for when in arrivals:
            self.kernel.at(when, self._deliver, src, dst, out.msg, data)

    def _stream_arrivals(self, src: NodeId, dst: NodeId) -> list[Micros]:
        net = self.network
        if net.blocked(src, dst) or net.blocked(dst, src):
            self.stream_failures += 1
            return []
        spec = net.link(src, dst)
        delay = int((spec.delay_ms + net.rng.random() * spec.jitter_ms) * 1000)
        for _ in range(TCP_MAX_RETRIES):
            if not spec.loss or net.rng.random() >= spec.loss:
                return [self.kernel.now + delay]
            delay += TCP_RTO_US
        self.stream_failures += 1
        return []

    def _deliver(self, src: NodeId, dst: NodeId, msg: Any, data: bytes | None) -> None:
        if self.network.blocked(src, dst):
            self.network.dropped += 1
            return
        node = self.nodes[dst]
        if not node.up:
            return
        if self._slow or self._inbound_free:
            at = self._inbound_at(node)
            if at is not None:
                self.kernel.at(at, self._handover, node.incarnation, src, dst, msg, data)
                return
        self._process(src, dst, msg, data)

    def _process(self, src: NodeId, dst: NodeId, msg: Any, data: bytes | None) -> None:
        """Hand one arrived packet to the core (or to the stall buffer of a stalled node)."""
        node = self.nodes[dst]
        stall = self._stalls.get(dst)
        if stall is not None:
            stall.buffer.append((src, msg, data))
            return
        if data is not None:
            decoded = decode(data)
            if decoded != msg:
                raise CodecMismatch(
                    f"{type(msg).__name__} changed on the wire:\n"
                    f"  sent {msg!r}\n  got  {decoded!r}",
                    time_us=self.now,
                )
            msg = decoded
        self.delivered += 1
        self.trace.record(self.kernel.now, "deliver", src, dst, type(msg).__name__)
        self._activate(node, lambda core, now: core.step(msg, now))

    def _timer(self, node: SimNode, incarnation: int, when: Micros) -> None:
        if node.id in self._stalls:
            return  # fires when the stall ends
        super()._timer(node, incarnation, when)
