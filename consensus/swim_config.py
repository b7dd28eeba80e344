"""Configuration of the SWIM core, with presets ``lan()``, ``wan()`` and ``local()``.

All durations are integer microseconds. ``lan()`` is hashicorp/memberlist's
``DefaultLANConfig``; ``wan()`` its ``DefaultWANConfig``; ``local()`` is a fast preset for tests
and single-machine runs (shorter than memberlist's ``DefaultLocalConfig`` so that test clusters
converge in a fraction of a second of virtual or real time).

Lifeguard can be switched off as a whole with ``without_lifeguard()`` (fixed suspicion timeout,
no health multiplier, no nacks, no suspect piggybacked on pings), which the benchmark uses to
compare false positives with and without it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from consensus.core import MICROS_PER_MS, MICROS_PER_SECOND, Micros
from consensus.errors import ConfigError

MS = MICROS_PER_MS
S = MICROS_PER_SECOND


@dataclass(frozen=True, slots=True)
class SwimConfig:
    """Every tunable of the SWIM core. Validate with ``validate()`` (the core does)."""

    probe_interval: Micros
    """Time between two probes of this node (scaled up by the health multiplier)."""
    probe_timeout: Micros
    """Wait for a direct ack before asking ``indirect_checks`` peers to probe for us."""
    indirect_checks: int
    """Peers asked to probe an unresponsive target on our behalf (SWIM's k)."""
    retransmit_mult: int
    """Each update is piggybacked ``retransmit_mult * ceil(log10(n + 1))`` times."""
    suspicion_mult: int
    """Minimum suspicion timeout = ``suspicion_mult * max(1, log10 n) * probe_interval``."""
    suspicion_max_timeout_mult: int
    """Lifeguard: a fresh suspicion lasts ``this * minimum`` until confirmations shrink it."""
    awareness_max_multiplier: int
    """Lifeguard: the health multiplier on probe timeouts/intervals goes up to this (1 = off)."""
    nacks: bool
    """Lifeguard: ask indirect probers to send a nack when the target does not answer them."""
    suspect_with_ping: bool
    """Lifeguard's buddy system: a ping to a suspect member carries its suspicion, so it refutes."""
    gossip_interval: Micros
    """Time between two gossip rounds (updates sent without a probe)."""
    gossip_nodes: int
    """Peers each gossip round sends to."""
    gossip_to_the_dead_time: Micros
    """Keep gossiping to (and remembering) dead members this long, so they can refute."""
    push_pull_interval: Micros
    """Base period of full-state push-pull with one random peer (scaled up past 32 members)."""
    join_retry_interval: Micros
    """While no other member is known, push-pull with the seeds this often."""
    reconnect_interval: Micros
    """Push-pull with one random DEAD member this often, so a healed partition merges back
    (Serf's reconnect; plain memberlist never contacts the dead again)."""
    seed_retry_interval: Micros
    """Push-pull with one seed address that no live member has (in turn) this often, even
    when not alone, so a group that lost its seeds (partition, restart, connection exhaustion)
    merges back with them (as Consul's retry-join and Serf's rejoin of known members do)."""
    reconnect_timeout: Micros
    """Remember a DEAD member (and keep trying to reconnect) this long; LEFT members are
    forgotten after ``gossip_to_the_dead_time``."""
    packet_budget: int
    """Maximum bytes of one encoded datagram (memberlist's UDPBufferSize)."""
    meta_budget: int
    """Maximum bytes of one member's encoded metadata (memberlist's MetaMaxSize)."""

    def validate(self) -> SwimConfig:
        """Raise ``ConfigError`` on nonsense; return self."""
        positive = (
            "probe_interval",
            "probe_timeout",
            "gossip_interval",
            "push_pull_interval",
            "join_retry_interval",
            "reconnect_interval",
            "seed_retry_interval",
            "retransmit_mult",
            "suspicion_mult",
            "suspicion_max_timeout_mult",
            "awareness_max_multiplier",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0")
        if self.probe_timeout >= self.probe_interval:
            raise ConfigError("probe_timeout must be shorter than probe_interval")
        if self.indirect_checks < 0 or self.gossip_nodes < 0:
            raise ConfigError("indirect_checks and gossip_nodes must be >= 0")
        if self.gossip_to_the_dead_time < 0 or self.reconnect_timeout < 0:
            raise ConfigError("gossip_to_the_dead_time and reconnect_timeout must be >= 0")
        if self.packet_budget < 256:
            raise ConfigError("packet_budget must be >= 256 bytes")
        if not 0 < self.meta_budget < self.packet_budget // 2:
            raise ConfigError("meta_budget must be > 0 and under half the packet budget")
        return self

    @property
    def lifeguard(self) -> bool:
        """True when any Lifeguard mechanism is on."""
        return (
            self.awareness_max_multiplier > 1
            or self.suspicion_max_timeout_mult > 1
            or self.nacks
            or self.suspect_with_ping
        )

    def without_lifeguard(self) -> SwimConfig:
        """The same configuration with every Lifeguard mechanism off (plain SWIM)."""
        return replace(
            self,
            suspicion_max_timeout_mult=1,
            awareness_max_multiplier=1,
            nacks=False,
            suspect_with_ping=False,
        )


def lan() -> SwimConfig:
    """memberlist's DefaultLANConfig."""
    return SwimConfig(
        probe_interval=1 * S,  # memberlist ProbeInterval: 1 s
        probe_timeout=500 * MS,  # ProbeTimeout: 500 ms, a LAN round trip with margin
        indirect_checks=3,  # IndirectChecks: 3
        retransmit_mult=4,  # RetransmitMult: 4
        suspicion_mult=4,  # SuspicionMult: 4
        suspicion_max_timeout_mult=6,  # SuspicionMaxTimeoutMult: 6
        awareness_max_multiplier=8,  # AwarenessMaxMultiplier: 8
        nacks=True,  # protocol v4+ peers send nacks
        suspect_with_ping=True,  # memberlist sends ping+suspect as a compound message
        gossip_interval=200 * MS,  # GossipInterval: 200 ms
        gossip_nodes=3,  # GossipNodes: 3
        gossip_to_the_dead_time=30 * S,  # GossipToTheDeadTime: 30 s
        push_pull_interval=30 * S,  # PushPullInterval: 30 s
        join_retry_interval=2 * S,  # ours: retry seeds every 2 s while alone
        reconnect_interval=30 * S,  # Serf's ReconnectInterval: 30 s
        seed_retry_interval=30 * S,  # ours: a seed nobody live has, every 30 s
        reconnect_timeout=24 * 3600 * S,  # Serf's ReconnectTimeout: 24 h
        packet_budget=1400,  # UDPBufferSize: 1400 bytes, under a 1500-byte MTU
        meta_budget=512,  # MetaMaxSize: 512 bytes
    )


def wan() -> SwimConfig:
    """memberlist's DefaultWANConfig: slower probes, more tolerance for latency and loss."""
    return replace(
        lan(),
        probe_interval=5 * S,  # ProbeInterval: 5 s
        probe_timeout=3 * S,  # ProbeTimeout: 3 s, a WAN round trip with margin
        suspicion_mult=6,  # SuspicionMult: 6
        gossip_interval=500 * MS,  # GossipInterval: 500 ms
        gossip_nodes=4,  # GossipNodes: 4
        gossip_to_the_dead_time=60 * S,  # GossipToTheDeadTime: 60 s
        push_pull_interval=60 * S,  # PushPullInterval: 60 s
        join_retry_interval=5 * S,  # ours: retry seeds every 5 s while alone
        reconnect_interval=60 * S,  # reconnect attempts to the dead every minute
        seed_retry_interval=60 * S,  # a missing seed every minute
    )


def local() -> SwimConfig:
    """Fast preset for tests and one machine (loopback round trips are well under 10 ms)."""
    return replace(
        lan(),
        probe_interval=200 * MS,  # five probes a second
        probe_timeout=50 * MS,  # loopback answers in well under a millisecond
        indirect_checks=1,  # memberlist's local preset: 1 indirect check
        retransmit_mult=2,  # local preset: 2
        suspicion_mult=3,  # local preset: 3 (minimum 0.6 s for ≤ 10 members)
        gossip_interval=20 * MS,  # updates spread in tens of milliseconds
        gossip_to_the_dead_time=3 * S,  # forget the dead quickly
        push_pull_interval=2 * S,  # anti-entropy every 2 s
        join_retry_interval=200 * MS,  # retry seeds every 200 ms while alone
        reconnect_interval=1 * S,  # a healed partition merges within about a second
        seed_retry_interval=1 * S,  # and a group that lost its seeds within about a second
        reconnect_timeout=60 * S,  # forget the dead after a minute
    )
