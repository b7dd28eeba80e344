"""SWIM membership with Lifeguard, as a sans-I/O core (see ``consensus.core``).

The rules, as in hashicorp/memberlist:

- **Probe**: every ``probe_interval`` (× the Lifeguard health multiplier) ping the next member in a
  shuffled round-robin order; without an ack by ``probe_timeout`` ask ``indirect_checks`` random
  live peers to ping it for us; without any ack by the end of the (scaled) interval, suspect it.
  Missed nacks from those peers (or, without nack-capable peers, the failure itself) raise the
  health score; a successful probe lowers it. A ping to a suspect member carries the suspicion
  (Lifeguard's buddy system), so the member can refute at once.
- **Suspicion, death, refutation, leave**: see ``consensus.swim_state`` (the member table).
- **Dissemination**: updates wait in a ``BroadcastQueue`` and ride on every packet (pings, acks,
  nacks, gossip rounds to ``gossip_nodes`` random peers) within ``packet_budget``, each sent
  ``retransmit_mult · ⌈log10(n+1)⌉`` times. Push-pull exchanges full state with one random live
  peer every ``push_pull_interval`` (scaled with cluster size); while no other member is known it
  goes to every seed address instead (join), every ``join_retry_interval``. Even when not alone,
  every ``seed_retry_interval`` one seed address that no live member has is pushed to (in turn),
  so two groups that lost each other merge back as soon as a seed answers.
- Dead and left members are still gossiped to, then forgotten after ``gossip_to_the_dead_time``
  (when the probe order is reshuffled, as memberlist does).

The core never reads a clock: ``now`` (µs) comes with every call, and may start anywhere.
Randomness comes from the injected ``random.Random``. Members are kept in insertion order and
nothing iterates a set, so a seed fixes the whole trace.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterable
from dataclasses import dataclass

from consensus.core import Micros, NodeId
from consensus.errors import ConfigError, LocalProtocolError
from consensus.lifeguard import Awareness, push_pull_interval, retransmit_limit
from consensus.swim_config import SwimConfig
from consensus.swim_messages import (
    Ack,
    Gossip,
    IndirectPing,
    MemberState,
    MemberStatus,
    Meta,
    Nack,
    PacketMsg,
    Ping,
    PushPull,
    SwimMessage,
    Update,
    UpdateKind,
    packet_base_size,
    push_pull_size,
    with_updates,
)
from consensus.swim_state import GONE, LIVE, MemberTable
from consensus.swim_types import MemberView, Outgoing, SwimReady

SEQ_MODULO = 2**32
_MESSAGE_TYPES = (Ping, IndirectPing, Ack, Nack, Gossip, PushPull)

# Timer kinds; the heap holds (when, order, kind, key) and stale entries are skipped.
_T_PROBE = 0
_T_PROBE_TIMEOUT = 1
_T_PROBE_DEADLINE = 2
_T_GOSSIP = 3
_T_PUSH_PULL = 4
_T_RELAY = 5
_T_SUSPICION = 6
_T_RECONNECT = 7
_T_SEEDS = 8
_PERIODIC = (0, 3, 4, 7, 8)


@dataclass(slots=True)
class _Probe:
    seq: int
    target: NodeId
    deadline: Micros
    expected_nacks: int = 0
    nacks: int = 0


@dataclass(slots=True)
class _Relay:
    origin_seq: int
    origin: NodeId
    origin_addr: str
    nack: bool
    deadline: Micros


class SwimCore:
    """One member's SWIM state machine; see the module docstring for the rules.

    ``seeds`` are addresses to push-pull with (join) while no other member is known, and one at
    a time every ``seed_retry_interval`` when no live member has that address. ``members``
    preloads known records (e.g. a simulator's bootstrapped cluster): they produce no events and
    no broadcasts, and with any preloaded record we do not announce ourselves either.
    ``incarnation`` is the starting incarnation (0 for a fresh process; a restarted member
    refutes whatever the others remember of it).
    """

    def __init__(
        self,
        node_id: NodeId,
        meta: Meta,
        config: SwimConfig,
        rng: random.Random,
        now: Micros,
        *,
        seeds: Iterable[str] = (),
        members: Iterable[MemberState] = (),
        incarnation: int = 0,
    ) -> None:
        if not node_id:
            raise ConfigError("node id must not be empty")
        self._id = node_id
        self.config = config.validate()
        self._rng = rng
        self._seeds = tuple(seeds)
        self._probe_order: list[NodeId] = []
        self._probe_index = 0
        self._probe: _Probe | None = None
        self._relays: dict[int, _Relay] = {}
        self._seq = rng.randrange(SEQ_MODULO)
        self._awareness = Awareness(config.awareness_max_multiplier)
        self._timers: list[tuple[Micros, int, int, object]] = []
        self._timer_order = 0
        self._next = {_T_PROBE: 0, _T_GOSSIP: 0, _T_PUSH_PULL: 0, _T_RECONNECT: 0, _T_SEEDS: 0}
        self._seed_turn = 0
        self._ready = SwimReady()
        self._table = MemberTable(
            node_id, meta, incarnation, self.config, self._awareness, now,
            self._on_added, self._on_suspicion,
        )  # fmt: skip
        preloaded = False
        for state in members:
            if state.node != node_id:
                preloaded = self._table.preload(state, now, notify=False) or preloaded
        self._probe_order = list(self._table.peers)
        rng.shuffle(self._probe_order)
        if not preloaded:
            self._table.queue_self_alive()
        cfg = self.config
        self._set(_T_PROBE, now + rng.randrange(cfg.probe_interval))
        self._gossip_phase = now + rng.randrange(cfg.gossip_interval)
        self._set(_T_GOSSIP, self._gossip_phase)
        joining = bool(self._seeds) and not preloaded
        pp = push_pull_interval(cfg.push_pull_interval, len(self._table.members))
        self._set(_T_PUSH_PULL, now if joining else now + rng.randrange(pp))
        self._set(_T_RECONNECT, now + rng.randrange(cfg.reconnect_interval))
        self._set(_T_SEEDS, now + cfg.seed_retry_interval)  # no draw: traces without seeds keep

    # ----------------------------------------------------------------------------- protocol
    @property
    def id(self) -> NodeId:
        return self._id

    def step(self, msg: SwimMessage, now: Micros) -> None:
        """Feed one inbound message (decoded) received at ``now``.

        Piggybacked updates are applied before the message itself, so that an ack to a ping
        carrying our suspicion already carries our refutation.
        """
        if not isinstance(msg, _MESSAGE_TYPES):
            raise LocalProtocolError(f"not a SWIM message: {type(msg).__name__}")
        if isinstance(msg, PushPull):
            if not msg.response:
                reply = PushPull(self._id, self.address, msg.join, True, self._table.full_state())
                self._stream(msg.source, msg.source_addr, reply)
            self._table.merge(msg.members, msg.source, now)
            return
        apply = self._table.apply
        for update in msg.updates:
            apply(update, now)
        if isinstance(msg, Ping):
            if msg.target == self._id:  # else: meant for a previous owner of our address
                self._send(msg.source, msg.source_addr, Ack(msg.seq, self._id))
        elif isinstance(msg, Ack):
            self._on_ack(msg)
        elif isinstance(msg, Nack):
            if self._probe is not None and msg.seq == self._probe.seq:
                self._probe.nacks += 1
        elif isinstance(msg, IndirectPing):
            self._on_indirect_ping(msg, now)
        self._arm_gossip(now)

    def tick(self, now: Micros) -> None:
        """Fire every timer due at or before ``now``."""
        timers = self._timers
        while timers and timers[0][0] <= now:
            entry = heapq.heappop(timers)
            if self._timer_live(entry):
                self._fire(entry[2], entry[3], now)
        self._arm_gossip(now)

    def next_deadline(self) -> Micros | None:
        timers = self._timers
        while timers and not self._timer_live(timers[0]):
            heapq.heappop(timers)
        return timers[0][0] if timers else None

    def has_ready(self) -> bool:
        return bool(self._ready) or bool(self._table.events)

    def ready(self) -> SwimReady:
        """Take the pending packets, streams and events (see ``SwimReady``)."""
        out, self._ready = self._ready, SwimReady()
        if self._table.events:
            out.events, self._table.events = self._table.events, []
        return out

    # ----------------------------------------------------------------------------- public API
    @property
    def address(self) -> str:
        return self._table.me.meta.address

    @property
    def incarnation(self) -> int:
        return self._table.me.incarnation

    @property
    def meta(self) -> Meta:
        return self._table.me.meta

    @property
    def health_score(self) -> int:
        """Lifeguard's local health score (0 = healthy)."""
        return self._awareness.score

    @property
    def leaving(self) -> bool:
        return self._table.leaving

    def member(self, node: NodeId) -> MemberView | None:
        m = self._table.members.get(node)
        return m.view() if m is not None else None

    def members(self) -> list[MemberView]:
        """Every known member (self included), sorted by node id."""
        table = self._table.members
        return [table[n].view() for n in sorted(table)]

    def live_members(self) -> list[NodeId]:
        """Ids of the members (self included) currently ALIVE or SUSPECT, sorted."""
        return sorted(n for n, m in self._table.members.items() if m.status in LIVE)

    def pending_updates(self) -> int:
        """Updates waiting in the broadcast queue."""
        return len(self._table.broadcasts)

    def set_meta(self, meta: Meta, now: Micros) -> None:
        """Publish new metadata (``ConfigError`` if over budget); bumps the metadata version."""
        self._table.set_meta(meta)
        self._arm_gossip(now)

    def join(self, addresses: Iterable[str], now: Micros) -> None:
        """Local command: push-pull (join) with each address now, e.g. peers found by mDNS.

        The addresses also become seeds, retried while no other member is alive. Our own
        address is ignored, and so is the whole call while leaving. Idempotent for addresses
        already pushed to: the cost is one extra push-pull each.
        """
        if self._table.leaving:
            return
        fresh = sorted(set(addresses) - {self.address})
        self._seeds = tuple(sorted(set(self._seeds) | set(fresh)))
        state = self._table.full_state()
        for addr in fresh:
            self._stream("", addr, PushPull(self._id, self.address, True, False, state))

    def leave(self, now: Micros) -> None:
        """Leave gracefully: broadcast our departure, stop probing, never refute again.

        Keep driving the core until ``leave_complete()`` so the departure is disseminated.
        """
        if not self._table.leaving:
            self._table.leave(now)
            self._probe = None
            self._arm_gossip(now)

    def leave_complete(self) -> bool:
        """True once our departure was sent its full retransmit count (or no one is left)."""
        table = self._table
        if not table.leaving:
            return False
        if self._id not in table.broadcasts:
            return True
        return not any(table.members[p].status in LIVE for p in table.peers)

    def full_state(self) -> tuple[MemberState, ...]:
        return self._table.full_state()

    # ----------------------------------------------------------------------------- timers
    def _push_timer(self, when: Micros, kind: int, key: object = None) -> None:
        self._timer_order += 1
        heapq.heappush(self._timers, (when, self._timer_order, kind, key))

    def _set(self, kind: int, when: Micros) -> None:
        self._next[kind] = when
        self._push_timer(when, kind)

    def _on_suspicion(self, deadline: Micros, node: NodeId) -> None:
        self._push_timer(deadline, _T_SUSPICION, node)

    def _timer_live(self, entry: tuple[Micros, int, int, object]) -> bool:
        when, _, kind, key = entry
        if kind in _PERIODIC:
            return when == self._next[kind]
        if kind in (_T_PROBE_TIMEOUT, _T_PROBE_DEADLINE):
            return self._probe is not None and self._probe.seq == key
        if kind == _T_RELAY:
            relay = self._relays.get(key)  # type: ignore[call-overload]
            return relay is not None and relay.deadline == when
        return self._table.suspicion_due(key, when)  # type: ignore[arg-type]

    def _fire(self, kind: int, key: object, now: Micros) -> None:
        if kind == _T_PROBE:
            self._probe_round(now)
        elif kind == _T_PROBE_TIMEOUT:
            self._probe_indirect()
        elif kind == _T_PROBE_DEADLINE:
            self._probe_failed(now)
        elif kind == _T_GOSSIP:
            self._gossip_round(now)
        elif kind == _T_PUSH_PULL:
            self._push_pull_round(now)
        elif kind == _T_RECONNECT:
            self._reconnect_round(now)
        elif kind == _T_SEEDS:
            self._seed_round(now)
        elif kind == _T_RELAY:
            relay = self._relays.pop(key)  # type: ignore[call-overload]
            if relay.nack:
                self._send(relay.origin, relay.origin_addr, Nack(relay.origin_seq, self._id))
        else:
            self._table.suspicion_expired(key, now)  # type: ignore[arg-type]

    # ----------------------------------------------------------------------------- probing
    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) % SEQ_MODULO
        return self._seq

    def _probe_round(self, now: Micros) -> None:
        if self._probe is not None:  # its deadline is due at this very instant
            self._probe_failed(now)
        interval = self._awareness.scale(self.config.probe_interval)
        self._set(_T_PROBE, now + interval)
        if self._table.leaving:
            return
        target = self._next_probe_target(now)
        if target is None:
            return
        member = self._table.members[target]
        probe = _Probe(self._next_seq(), target, now + interval)
        self._probe = probe
        extra: tuple[Update, ...] = ()
        if member.status == MemberStatus.SUSPECT and self.config.suspect_with_ping:
            extra = (Update(UpdateKind.SUSPECT, target, member.incarnation, self._id),)
        ping = Ping(probe.seq, target, self._id, self.address, extra)
        self._send(target, member.meta.address, ping)
        self._push_timer(now + self.config.probe_timeout, _T_PROBE_TIMEOUT, probe.seq)
        self._push_timer(probe.deadline, _T_PROBE_DEADLINE, probe.seq)

    def _next_probe_target(self, now: Micros) -> NodeId | None:
        members = self._table.members
        for _ in range(2):
            order = self._probe_order
            while self._probe_index < len(order):
                node = order[self._probe_index]
                self._probe_index += 1
                m = members.get(node)
                if m is not None and m.status in LIVE:
                    return node
            self._reset_probe_order(now)
        return None

    def _reset_probe_order(self, now: Micros) -> None:
        """Forget members LEFT for longer than gossip_to_the_dead_time and DEAD for longer than
        that and reconnect_timeout; reshuffle the order."""
        table = self._table
        cfg = self.config
        left_horizon = now - cfg.gossip_to_the_dead_time
        dead_horizon = now - max(cfg.gossip_to_the_dead_time, cfg.reconnect_timeout)
        for node in list(table.peers):
            m = table.members[node]
            horizon = left_horizon if m.status == MemberStatus.LEFT else dead_horizon
            if m.status in GONE and m.since < horizon:
                table.forget(node)
        self._probe_order = list(table.peers)
        self._rng.shuffle(self._probe_order)
        self._probe_index = 0

    def _on_added(self, node: NodeId) -> None:
        # Insert at a random place in the rest of this round (memberlist does the same).
        pos = self._rng.randint(self._probe_index, len(self._probe_order))
        self._probe_order.insert(pos, node)

    def _probe_indirect(self) -> None:
        probe = self._probe
        assert probe is not None
        target = self._table.members.get(probe.target)
        if target is None:
            return
        peers = self._table.random_peers(
            self._rng,
            self.config.indirect_checks,
            lambda m: m.status == MemberStatus.ALIVE and m.node != probe.target,
        )
        nack = self.config.nacks
        probe.expected_nacks = len(peers) if nack else 0
        for peer in peers:
            msg = IndirectPing(
                probe.seq, probe.target, target.meta.address, self._id, self.address, nack
            )
            self._send(peer.node, peer.meta.address, msg)

    def _probe_failed(self, now: Micros) -> None:
        probe = self._probe
        assert probe is not None
        self._probe = None
        if probe.expected_nacks > 0:
            self._awareness.apply_delta(max(0, probe.expected_nacks - probe.nacks))
        else:
            self._awareness.apply_delta(1)
        target = self._table.members.get(probe.target)
        if target is not None:
            self._table.suspect(probe.target, target.incarnation, self._id, now)

    def _on_ack(self, msg: Ack) -> None:
        probe = self._probe
        if probe is not None and msg.seq == probe.seq:
            self._probe = None
            self._awareness.apply_delta(-1)
            return
        relay = self._relays.pop(msg.seq, None)
        if relay is not None:
            self._send(relay.origin, relay.origin_addr, Ack(relay.origin_seq, self._id))

    def _on_indirect_ping(self, msg: IndirectPing, now: Micros) -> None:
        seq = self._next_seq()
        deadline = now + self.config.probe_timeout
        self._relays[seq] = _Relay(msg.seq, msg.source, msg.source_addr, msg.nack, deadline)
        self._push_timer(deadline, _T_RELAY, seq)
        self._send(msg.target, msg.target_addr, Ping(seq, msg.target, self._id, self.address))

    # ----------------------------------------------------------------------------- gossip
    def _arm_gossip(self, now: Micros) -> None:
        """Gossip rounds only run while updates are queued (an idle round sends nothing, as in
        memberlist); re-arm on the round's original phase once something is queued."""
        if self._next[_T_GOSSIP] < 0 and self._table.broadcasts:
            interval = self.config.gossip_interval
            self._set(_T_GOSSIP, now + (self._gossip_phase - now) % interval)

    def _gossip_round(self, now: Micros) -> None:
        self._gossip_round_send(now)
        if self._table.broadcasts:
            self._set(_T_GOSSIP, now + self.config.gossip_interval)
        else:
            self._next[_T_GOSSIP] = -1  # idle until something is queued

    def _gossip_round_send(self, now: Micros) -> None:
        if not self._table.broadcasts:
            return
        horizon = now - self.config.gossip_to_the_dead_time
        peers = self._table.random_peers(
            self._rng, self.config.gossip_nodes, lambda m: m.status in LIVE or m.since >= horizon
        )
        for peer in peers:
            msg = Gossip(self._id)
            base = packet_base_size(msg)
            updates, size = self._take_updates(base)
            if not updates:
                return
            self._ready.packets.append(
                Outgoing(peer.node, peer.meta.address, Gossip(self._id, updates), base + size)
            )

    def _take_updates(self, base: int) -> tuple[tuple[Update, ...], int]:
        limit = retransmit_limit(self.config.retransmit_mult, len(self._table.members))
        return self._table.broadcasts.take(self.config.packet_budget - base, limit)

    def _send(self, to: NodeId, addr: str, msg: PacketMsg) -> None:
        """Queue one packet, piggybacking as many pending updates as fit in the budget."""
        size = packet_base_size(msg)
        if self._table.broadcasts:
            updates, extra = self._take_updates(size)
            if updates:
                size += extra
                msg = with_updates(msg, msg.updates + updates)
        self._ready.packets.append(Outgoing(to, addr, msg, size))

    # ----------------------------------------------------------------------------- push-pull
    def _push_pull_round(self, now: Micros) -> None:
        table = self._table
        members = table.members
        live = [p for p in table.peers if members[p].status == MemberStatus.ALIVE]
        if not live and not table.leaving and self._seeds:
            self._set(_T_PUSH_PULL, now + self.config.join_retry_interval)
            state = table.full_state()
            for seed in self._seeds:
                if seed != self.address:
                    msg = PushPull(self._id, self.address, True, False, state)
                    self._stream("", seed, msg)
            return
        self._set(
            _T_PUSH_PULL, now + push_pull_interval(self.config.push_pull_interval, len(members))
        )
        if table.leaving or not live:
            return
        peer = members[live[self._rng.randrange(len(live))]]
        msg = PushPull(self._id, self.address, False, False, table.full_state())
        self._stream(peer.node, peer.meta.address, msg)

    def _reconnect_round(self, now: Micros) -> None:
        self._set(_T_RECONNECT, now + self.config.reconnect_interval)
        table = self._table
        if table.leaving:
            return
        dead = [p for p in table.peers if table.members[p].status == MemberStatus.DEAD]
        if dead:
            peer = table.members[dead[self._rng.randrange(len(dead))]]
            msg = PushPull(self._id, self.address, False, False, table.full_state())
            self._stream(peer.node, peer.meta.address, msg)

    def _seed_round(self, now: Micros) -> None:
        """Push-pull with the next seed address no live member has (none while alone: the
        push-pull round retries every seed then; none while leaving)."""
        self._set(_T_SEEDS, now + self.config.seed_retry_interval)
        table = self._table
        if table.leaving or not self._seeds:
            return
        members = table.members
        live = {members[p].meta.address for p in table.peers if members[p].status in LIVE}
        if not live:
            return
        missing = [s for s in self._seeds if s not in live and s != self.address]
        if not missing:
            return
        seed = missing[self._seed_turn % len(missing)]
        self._seed_turn += 1
        self._stream("", seed, PushPull(self._id, self.address, True, False, table.full_state()))

    def _stream(self, to: NodeId, addr: str, msg: PushPull) -> None:
        table = self._table
        cached = table.full_state_size() if msg.members is table.full_state() else None
        size = push_pull_size(msg, cached)
        self._ready.streams.append(Outgoing(to, addr, msg, size))
