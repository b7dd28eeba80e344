"""The SWIM core driven by hand: probing, indirect probes, Lifeguard's nacks and health,
refutation through the buddy system, leave, metadata, determinism and the driving contract."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from consensus.errors import ConfigError
from consensus.swim import SwimCore
from consensus.swim_config import SwimConfig, lan, local, wan
from consensus.swim_messages import (
    Ack,
    Gossip,
    IndirectPing,
    MemberState,
    MemberStatus,
    Meta,
    Nack,
    Ping,
    Update,
    UpdateKind,
)
from consensus.swim_types import EventKind, Outgoing, SwimReady

S = 1_000_000
MS = 1_000


def make(
    node: str = "a", peers: str = "bcd", config: SwimConfig | None = None, seed: int = 1
) -> SwimCore:
    members = [MemberState(p, MemberStatus.ALIVE, 0, 0, Meta(p)) for p in peers]
    return SwimCore(node, Meta(node), config or lan(), random.Random(seed), 0, members=members)


def run_to(core: SwimCore, until: int) -> SwimReady:
    """Fire every timer up to ``until``; merge the outputs."""
    out = SwimReady()
    while (d := core.next_deadline()) is not None and d <= until:
        core.tick(d)
        rd = core.ready()
        out.packets += rd.packets
        out.streams += rd.streams
        out.events += rd.events
    return out


def first_ping(core: SwimCore, limit: int = 5 * S) -> tuple[int, Outgoing]:
    """Advance until the core sends its first probe; (time, packet)."""
    while (d := core.next_deadline()) is not None and d <= limit:
        core.tick(d)
        for o in core.ready().packets:
            if isinstance(o.msg, Ping):
                return d, o
    raise AssertionError("no probe sent")


def updates_of(packets: list[Outgoing]) -> list[Update]:
    return [u for o in packets for u in o.msg.updates]  # type: ignore[union-attr]


def test_presets_follow_memberlist() -> None:
    c = lan()
    assert (c.probe_interval, c.probe_timeout, c.indirect_checks) == (1 * S, 500 * MS, 3)
    assert (c.gossip_interval, c.gossip_nodes, c.suspicion_mult) == (200 * MS, 3, 4)
    assert (c.push_pull_interval, c.retransmit_mult, c.packet_budget) == (30 * S, 4, 1400)
    assert wan().probe_interval == 5 * S and wan().suspicion_mult == 6
    assert local().probe_interval < lan().probe_interval
    for preset in (lan(), wan(), local(), lan().without_lifeguard()):
        preset.validate()
    assert lan().lifeguard and not lan().without_lifeguard().lifeguard


def test_invalid_config_is_rejected() -> None:
    with pytest.raises(ConfigError):
        replace(lan(), probe_timeout=2 * S).validate()
    with pytest.raises(ConfigError):
        replace(lan(), gossip_interval=0).validate()


def test_a_probe_answered_in_time_raises_no_suspicion() -> None:
    a = make()
    t, ping = first_ping(a)
    a.step(Ack(ping.msg.seq, ping.to), t + 10 * MS)  # type: ignore[union-attr]
    out = run_to(a, t + 1 * S - 1)
    assert not out.events
    assert not [o for o in out.packets if isinstance(o.msg, IndirectPing)]
    assert a.health_score == 0


def test_unanswered_probe_goes_indirect_then_suspects_and_counts_missing_nacks() -> None:
    a = make(peers="bcde")
    t, ping = first_ping(a)
    target = ping.to
    out = run_to(a, t + 500 * MS)  # probe timeout: ask k = 3 others
    ind = [o for o in out.packets if isinstance(o.msg, IndirectPing)]
    assert sorted(o.to for o in ind) == sorted(set("bcde") - {target})
    assert all(o.msg.target == target and o.msg.nack for o in ind)  # type: ignore[union-attr]
    a.step(Nack(ping.msg.seq, ind[0].to), t + 700 * MS)  # type: ignore[union-attr]
    out = run_to(a, t + 1 * S)
    assert [(e.kind, e.node, e.source) for e in out.events] == [(EventKind.SUSPECTED, target, "a")]
    assert a.health_score == 2  # 3 nacks expected, 1 received
    assert [o for o in out.packets if isinstance(o.msg, Ping)]  # the next probe, at t + 1 s
    nxt, _ = first_ping(a)
    assert nxt == t + 1 * S + 3 * S  # its interval is scaled by (score + 1)


def test_an_indirect_ack_saves_the_probe() -> None:
    a = make()
    t, ping = first_ping(a)
    run_to(a, t + 500 * MS)
    a.step(Ack(ping.msg.seq, "c"), t + 600 * MS)  # type: ignore[union-attr]
    assert not run_to(a, t + 2 * S - 1).events


def test_without_lifeguard_a_failed_probe_costs_nothing_and_no_nack_is_asked() -> None:
    a = make(config=lan().without_lifeguard())
    t, _ = first_ping(a)
    out = run_to(a, t + 1 * S)
    assert all(not o.msg.nack for o in out.packets if isinstance(o.msg, IndirectPing))  # type: ignore[union-attr]
    assert a.health_score == 0


def test_relay_forwards_the_targets_ack_to_the_origin() -> None:
    c = make("c", "abd")
    c.step(IndirectPing(77, "b", "b", "a", "a", True), 0)
    (ping,) = c.ready().packets
    assert (ping.to, ping.addr, ping.msg.target) == ("b", "b", "b")  # type: ignore[union-attr]
    c.step(Ack(ping.msg.seq, "b"), 5 * MS)  # type: ignore[union-attr]
    (ack,) = c.ready().packets
    assert (ack.to, ack.msg) == ("a", Ack(77, "c"))
    assert not [o for o in run_to(c, 600 * MS).packets if isinstance(o.msg, Nack)]


def test_relay_sends_a_nack_when_the_target_is_silent() -> None:
    c = make("c", "abd")
    c.step(IndirectPing(77, "b", "b", "a", "a", True), 0)
    c.ready()
    out = run_to(c, 500 * MS)
    nacks = [o for o in out.packets if isinstance(o.msg, Nack)]
    assert [(o.to, o.msg.seq) for o in nacks] == [("a", 77)]  # type: ignore[union-attr]
    c.step(IndirectPing(78, "b", "b", "a", "a", False), 600 * MS)
    c.ready()
    out = run_to(c, 1200 * MS)
    assert not [o for o in out.packets if isinstance(o.msg, Nack)]


def test_a_ping_is_acked_and_a_misaddressed_ping_ignored() -> None:
    b = make("b", "acd")
    b.step(Ping(5, "b", "a", "a"), 0)
    b.step(Ping(6, "zz", "a", "a"), 0)
    assert [(o.to, o.msg) for o in b.ready().packets] == [("a", Ack(5, "b"))]


def test_a_ping_carrying_our_suspicion_is_answered_with_the_refutation() -> None:
    """Lifeguard's buddy system: the ack already carries ALIVE with a higher incarnation."""
    b = make("b", "acd")
    b.step(Ping(5, "b", "a", "a", (Update(UpdateKind.SUSPECT, "b", 0, "a"),)), 0)
    (ack,) = b.ready().packets
    assert isinstance(ack.msg, Ack)
    assert Update(UpdateKind.ALIVE, "b", 1, "b", 0, Meta("b")) in ack.msg.updates
    assert b.incarnation == 1


def test_a_ping_to_a_suspect_member_carries_the_suspicion() -> None:
    a = make(peers="b")
    a.step(Gossip("c", (Update(UpdateKind.SUSPECT, "b", 0, "c"),)), 0)
    _, ping = first_ping(a)
    assert Update(UpdateKind.SUSPECT, "b", 0, "a") in ping.msg.updates  # type: ignore[union-attr]


def test_suspicion_timer_fires_through_tick() -> None:
    a = make(peers="bcde", config=lan())
    a.step(Gossip("c", (Update(UpdateKind.SUSPECT, "b", 0, "c"),)), 0)
    a.ready()
    events = []
    while (d := a.next_deadline()) is not None and d <= 30 * S:
        a.tick(d)
        rd = a.ready()
        events += rd.events
        for o in rd.packets:  # every member but b answers (nobody confirms the suspicion)
            if isinstance(o.msg, Ping) and o.to != "b":
                a.step(Ack(o.msg.seq, o.to), d)
    dead = [e for e in events if e.kind == EventKind.DEAD]
    assert [(e.node, e.source) for e in dead] == [("b", "a")]
    assert a.member("b").status == MemberStatus.DEAD  # type: ignore[union-attr]


def test_leave_broadcasts_departure_stops_probing_and_completes() -> None:
    a = make(peers="bcde")
    a.leave(0)
    assert a.leaving and not a.leave_complete()
    out = run_to(a, 10 * S)
    assert not [o for o in out.packets if isinstance(o.msg, Ping)]
    departure = Update(UpdateKind.DEAD, "a", 0, "a")
    assert updates_of(out.packets).count(departure) == 4 * 1  # retransmit_limit(4, 5) = 4
    assert a.leave_complete()
    b = make("b", "acde")
    b.step(out.packets[0].msg, 10 * S)  # type: ignore[arg-type]
    assert [(e.kind, e.node) for e in b.ready().events] == [(EventKind.LEFT, "a")]


def test_set_meta_is_disseminated_and_budgeted() -> None:
    a = make()
    a.set_meta(Meta("a", tier="heavy", models=("defects",)), 0)
    out = run_to(a, 1 * S)
    sent = [u for u in updates_of(out.packets) if u.node == "a"]
    assert sent and all(u.meta_version == 1 and u.meta.tier == "heavy" for u in sent)  # type: ignore[union-attr]
    with pytest.raises(ConfigError):
        a.set_meta(Meta("a", models=tuple(f"model-{i:04d}" for i in range(100))), 0)


def test_next_deadline_moves_past_now_after_tick() -> None:
    a = make(peers="bcdefg")
    now = 0
    for _ in range(200):
        d = a.next_deadline()
        assert d is not None and d >= now
        now = d
        a.tick(now)
        a.ready()
        assert a.next_deadline() is None or a.next_deadline() > now  # type: ignore[operator]


def _trace(seed: int) -> list[str]:
    a = make(peers="bcdefgh", seed=seed)
    out = []
    for _ in range(100):
        d = a.next_deadline()
        assert d is not None
        a.tick(d)
        rd = a.ready()
        out += [f"{d} {o.to} {o.msg!r}" for o in rd.packets]
        for o in rd.packets:
            if isinstance(o.msg, Ping) and o.to != "c":
                a.step(Ack(o.msg.seq, o.to), d + 1 * MS)
    return out


def test_same_seed_same_trace_and_different_seed_different_order() -> None:
    assert _trace(7) == _trace(7)
    assert _trace(7) != _trace(8)


def test_core_starts_at_any_clock_value() -> None:
    start = 987_654_321_000
    members = [MemberState(p, MemberStatus.ALIVE, 0, 0, Meta(p)) for p in "bc"]
    a = SwimCore("a", Meta("a"), local(), random.Random(3), start, members=members)
    d = a.next_deadline()
    assert d is not None and start <= d <= start + local().push_pull_interval


def test_join_pushes_to_found_addresses_now_and_keeps_them_as_seeds() -> None:
    core = make("a")
    core.ready()
    core.join(["10.0.0.2:8471", core.address, "10.0.0.3:8471"], 5)
    streams = core.ready().streams
    assert sorted(out.addr for out in streams) == ["10.0.0.2:8471", "10.0.0.3:8471"]
    assert all(out.msg.join and out.to == "" for out in streams)
    core.leave(6)
    core.ready()
    core.join(["10.0.0.4:8471"], 7)
    assert core.ready().streams == []  # a leaving node joins nobody
