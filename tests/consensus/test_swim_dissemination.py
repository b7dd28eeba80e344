"""Dissemination: the broadcast queue, the packet budget, the retransmit limit, push-pull,
joining through seeds, rejoining after a restart, reconnecting to the dead, forgetting."""

from __future__ import annotations

import random
from dataclasses import replace

from consensus.lifeguard import retransmit_limit
from consensus.swim import SwimCore
from consensus.swim_broadcast import BroadcastQueue
from consensus.swim_config import SwimConfig, lan, local
from consensus.swim_messages import (
    Ack,
    Gossip,
    MemberState,
    MemberStatus,
    Meta,
    Ping,
    PushPull,
    Update,
    UpdateKind,
    encode,
    update_size,
)
from consensus.swim_types import EventKind, SwimReady

S = 1_000_000
MS = 1_000


def make(
    node: str = "a",
    peers: list[str] | str = "bcd",
    config: SwimConfig | None = None,
    seed: int = 1,
    **kw: object,
) -> SwimCore:
    members = [MemberState(p, MemberStatus.ALIVE, 0, 0, Meta(p)) for p in peers]
    return SwimCore(
        node, Meta(node), config or lan(), random.Random(seed), 0, members=members, **kw
    )  # type: ignore[arg-type]


def run_to(core: SwimCore, until: int, answer: bool = True) -> SwimReady:
    """Fire timers up to ``until``, acking every probe at once when ``answer``."""
    out = SwimReady()
    while (d := core.next_deadline()) is not None and d <= until:
        core.tick(d)
        rd = core.ready()
        out.packets += rd.packets
        out.streams += rd.streams
        out.events += rd.events
        if answer:
            for o in rd.packets:
                if isinstance(o.msg, Ping):
                    core.step(Ack(o.msg.seq, o.to), d)
                    more = core.ready()
                    out.packets += more.packets
    return out


def alive(node: str, inc: int = 0) -> Update:
    return Update(UpdateKind.ALIVE, node, inc, node, 0, Meta(node))


# ---- the queue -----------------------------------------------------------------------------


def test_a_newer_update_about_a_node_replaces_the_queued_one() -> None:
    q = BroadcastQueue()
    q.queue(alive("b", 1))
    q.queue(Update(UpdateKind.SUSPECT, "b", 1, "c"))
    assert len(q) == 1
    assert q.pending("b") == Update(UpdateKind.SUSPECT, "b", 1, "c")


def test_take_prefers_fewest_transmissions_then_newest_and_drops_at_the_limit() -> None:
    q = BroadcastQueue()
    for n in "bcd":
        q.queue(alive(n))
    one = update_size(alive("b"))
    first, _ = q.take(one + 2, limit=2)
    assert first == (alive("d"),)  # newest first
    second, _ = q.take(one + 2, limit=2)
    assert second == (alive("c"),)  # then the fewest sent
    everything, used = q.take(1400, limit=2)
    assert everything == (alive("b"), alive("d"), alive("c"))
    assert used == 2 + 3 * one
    assert q.take(1400, limit=2)[0] == (alive("b"),)  # d and c reached the limit
    assert len(q) == 0


def test_every_packet_fits_the_budget_whatever_is_queued() -> None:
    cfg = lan()
    peers = [f"member-with-a-long-name-{i:04d}" for i in range(300)]
    a = make(peers=peers[:3], config=cfg)
    for p in peers[3:]:
        meta = Meta.create(f"{p}.example.net:7946", ports={"api": 8080}, tier="standard")
        a.step(Gossip("b", (Update(UpdateKind.ALIVE, p, 0, p, 0, meta),)), 0)
    a.ready()
    out = run_to(a, 5 * S)
    assert out.packets
    for o in out.packets:
        assert len(encode(o.msg)) <= cfg.packet_budget
        assert len(encode(o.msg)) <= o.size  # the size hint is an upper bound
    assert max(len(o.msg.updates) for o in out.packets) > 5  # type: ignore[union-attr]


def test_an_update_is_sent_exactly_retransmit_limit_times() -> None:
    cfg = lan()
    a = make(peers="bcdefghij", config=cfg)  # n = 10
    a.step(Gossip("b", (alive("k"),)), 0)  # a new member: n = 11
    a.ready()
    out = run_to(a, 20 * S)
    sent = sum(1 for o in out.packets for u in o.msg.updates if u.node == "k")  # type: ignore[union-attr]
    assert sent == retransmit_limit(cfg.retransmit_mult, 11) == 8
    assert a.pending_updates() == 0


def test_gossip_rounds_stop_when_nothing_is_queued() -> None:
    a = make(peers="bcdefghij")
    out = run_to(a, 10 * S)
    assert not [o for o in out.packets if isinstance(o.msg, Gossip)]


# ---- push-pull -----------------------------------------------------------------------------


def test_push_pull_request_is_answered_with_our_full_state_then_merged() -> None:
    a = make(peers="bc")
    remote = (
        MemberState("x", MemberStatus.ALIVE, 2, 0, Meta("x")),
        MemberState("b", MemberStatus.LEFT, 0, 0, Meta("b")),
    )
    a.step(PushPull("x", "x-addr", True, False, remote), 0)
    rd = a.ready()
    (reply,) = rd.streams
    assert reply.addr == "x-addr" and reply.msg.response and reply.msg.join  # type: ignore[union-attr]
    assert [s.node for s in reply.msg.members] == ["a", "b", "c"]  # type: ignore[union-attr]
    assert reply.size == len(encode(reply.msg))
    assert [(e.kind, e.node) for e in rd.events] == [
        (EventKind.JOINED, "x"),
        (EventKind.LEFT, "b"),
    ]
    a.step(PushPull("x", "x-addr", False, True, remote), 0)  # a response is not answered
    assert not a.ready().streams


def test_periodic_push_pull_goes_to_one_live_peer_at_the_scaled_interval() -> None:
    a = make(peers="bcd", config=lan())
    out = run_to(a, 65 * S)
    assert 2 <= len(out.streams) <= 3  # every 30 s (n = 4 <= 32: unscaled), random phase
    assert all(o.to in "bcd" and not o.msg.join for o in out.streams)  # type: ignore[union-attr]


def test_join_pushes_to_every_seed_and_retries_while_alone() -> None:
    cfg = local()
    a = SwimCore("a", Meta("a"), cfg, random.Random(1), 0, seeds=["s1", "s2", "a"])
    out = run_to(a, 0)
    assert [(o.to, o.addr) for o in out.streams] == [("", "s1"), ("", "s2")]
    assert all(o.msg.join for o in out.streams)  # type: ignore[union-attr]
    out = run_to(a, cfg.join_retry_interval)
    assert len(out.streams) == 2  # still alone: retried
    seed_state = (MemberState("s1", MemberStatus.ALIVE, 0, 0, Meta("s1")),)
    a.step(PushPull("s1", "s1", True, True, seed_state), cfg.join_retry_interval)
    assert [(e.kind, e.node) for e in a.ready().events] == [(EventKind.JOINED, "s1")]
    out = run_to(a, 3 * cfg.join_retry_interval)
    assert not [o for o in out.streams if o.msg.join]  # type: ignore[union-attr]


def test_a_restarted_member_refutes_its_old_death() -> None:
    fresh = SwimCore("a", Meta("a"), local(), random.Random(1), 0, seeds=["b"])
    fresh.ready()
    remembered = (
        MemberState("b", MemberStatus.ALIVE, 0, 0, Meta("b")),
        MemberState("a", MemberStatus.DEAD, 3, 0, Meta("a")),
    )
    fresh.step(PushPull("b", "b", True, True, remembered), 1 * MS)
    assert fresh.incarnation == 4
    out = run_to(fresh, 100 * MS)
    assert Update(UpdateKind.ALIVE, "a", 4, "a", 0, Meta("a")) in [
        u
        for o in out.packets
        for u in o.msg.updates  # type: ignore[union-attr]
    ]


# ---- the dead ------------------------------------------------------------------------------


def test_dead_members_get_reconnect_attempts_then_are_forgotten() -> None:
    cfg = replace(local(), reconnect_interval=1 * S, reconnect_timeout=10 * S)
    a = make(peers="bcd", config=cfg)
    a.step(Gossip("c", (Update(UpdateKind.SUSPECT, "b", 0, "c"),)), 0)
    run_to(a, 500 * MS)
    a.step(Gossip("c", (Update(UpdateKind.DEAD, "b", 0, "c"),)), 700 * MS)  # past the minimum
    assert a.member("b").status == MemberStatus.DEAD  # type: ignore[union-attr]
    a.ready()
    out = run_to(a, 6 * S)
    to_b = [o for o in out.streams if o.to == "b"]
    assert len(to_b) >= 4  # one per reconnect interval, only dead member
    assert a.member("b") is not None
    run_to(a, 13 * S)
    assert a.member("b") is None  # past reconnect_timeout: forgotten at the next reshuffle
    assert a.live_members() == ["a", "c", "d"]


def test_left_members_are_forgotten_after_gossip_to_the_dead_time() -> None:
    cfg = local()
    a = make(peers="bcd", config=cfg)
    a.step(Gossip("b", (Update(UpdateKind.DEAD, "b", 0, "b"),)), 0)
    out = run_to(a, cfg.gossip_to_the_dead_time + 2 * S)
    assert not [o for o in out.streams if o.to == "b"]  # no reconnect to who left
    assert a.member("b") is None
