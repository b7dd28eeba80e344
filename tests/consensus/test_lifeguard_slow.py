"""Lifeguard in the slow-detector case, on the core driven by hand: a member whose timers fire
on time but which reads its packets late (Dadgar et al. 2018, "Lifeguard").

The member under test is ``a`` in a cluster of ten (minimum suspicion timeout 4 s, k = 2
expected confirmations, so Lifeguard starts a lone accuser's timer at 6 × 4 s = 24 s).
"""

from __future__ import annotations

import itertools
import random

import pytest

from consensus.swim import SwimCore
from consensus.swim_config import SwimConfig, lan
from consensus.swim_messages import (
    Ack,
    Gossip,
    MemberState,
    MemberStatus,
    Meta,
    Ping,
    Update,
    UpdateKind,
)
from consensus.swim_types import EventKind, SwimReady

S = 1_000_000
MS = 1_000
PEERS = "bcdefghij"


def make(config: SwimConfig) -> SwimCore:
    members = [MemberState(p, MemberStatus.ALIVE, 0, 0, Meta(p)) for p in PEERS]
    return SwimCore("a", Meta("a"), config, random.Random(3), 0, members=members)


def run_to(core: SwimCore, until: int) -> SwimReady:
    out = SwimReady()
    while (d := core.next_deadline()) is not None and d <= until:
        core.tick(d)
        rd = core.ready()
        out.packets += rd.packets
        out.events += rd.events
    return out


def first_ping(core: SwimCore) -> tuple[int, Ping]:
    while (d := core.next_deadline()) is not None and d <= 5 * S:
        core.tick(d)
        for o in core.ready().packets:
            if isinstance(o.msg, Ping):
                return d, o.msg
    raise AssertionError("no probe sent")


def test_an_ack_read_after_the_probe_deadline_saves_nothing() -> None:
    a = make(lan())
    t, ping = first_ping(a)
    out = run_to(a, t + 1 * S)  # the ack is in the socket, unread: the deadline fires first
    assert [(e.kind, e.node) for e in out.events] == [(EventKind.SUSPECTED, ping.target)]
    assert a.health_score == 3  # three indirect probers, no nack read from any
    a.step(Ack(ping.seq, ping.target), t + 1 * S + 1)  # read late
    assert a.health_score == 3
    assert a.member(ping.target).status == MemberStatus.SUSPECT  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("lifeguard", "read_after_s", "dead"),
    [
        (True, 5, False),  # a lone accuser waits 24 s: the refutation read 5 s late clears it
        (True, 20, False),
        (False, 3, False),  # plain SWIM: 4 s minimum, a refutation read 3 s late is in time
        (False, 5, True),  # ... read 5 s late comes after the death
    ],
)
def test_a_lone_slow_accuser_declares_its_target_dead_only_without_lifeguard(
    lifeguard: bool, read_after_s: int, dead: bool
) -> None:
    a = make(lan() if lifeguard else lan().without_lifeguard())
    t, ping = first_ping(a)
    out = run_to(a, t + 1 * S)
    assert [e.kind for e in out.events] == [EventKind.SUSPECTED]
    suspected_at = t + 1 * S
    read_at = suspected_at + read_after_s * S
    out = run_to(a, read_at - 1)
    refutation = Update(UpdateKind.ALIVE, ping.target, 1, ping.target, 0, Meta(ping.target))
    a.step(Gossip("j", (refutation,)), read_at)
    out.events += a.ready().events
    deaths = [e for e in out.events if e.kind == EventKind.DEAD and e.node == ping.target]
    assert bool(deaths) == dead, out.events
    if dead:
        assert deaths[0].at == suspected_at + 4 * S
    assert a.member(ping.target).status == MemberStatus.ALIVE  # type: ignore[union-attr]


def test_missed_acks_stretch_the_slow_members_probe_interval_up_to_eight_times() -> None:
    a = make(lan())
    sent: list[int] = []
    now = 0
    while now < 60 * S:  # read nothing for a minute: every probe fails
        d = a.next_deadline()
        assert d is not None
        now = d
        a.tick(now)
        sent += [now for o in a.ready().packets if isinstance(o.msg, Ping) and o.msg.source == "a"]
    assert a.health_score == 7
    gaps = [b - x for x, b in itertools.pairwise(sent)]
    assert gaps[0] == 1 * S and gaps[-1] == 8 * S
    assert len(sent) < 15  # 60 at the base interval
