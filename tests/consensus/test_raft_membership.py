"""Raft §6 (thesis ch. 4) membership changes: single-server changes, learners, promotion only
when caught up, one change at a time, a removed leader stepping down."""

from __future__ import annotations

import random

import pytest

from consensus.errors import ConfChangeError, LocalProtocolError, NotLeader
from consensus.messages import (
    AppendEntries,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryKind,
    TimeoutNow,
    VoteRequest,
)
from consensus.raft import ConfChanged, RaftNode, Role
from consensus.raft_membership import apply_change, bootstrap_entries, encode_change
from consensus.storage import MemoryStorage
from tests.consensus.raft_net import Net, cfg

T = ConfChangeType
IDS3 = ["a", "b", "c"]
PLAIN = cfg(pre_vote=False, check_quorum=False)


def change(net: Net, lead: str, kind: ConfChangeType, node: str) -> int:
    """Propose a change, then let the cluster commit and apply it."""
    index = net[lead].propose_conf_change(ConfChange(kind, node), net.now)
    net.deliver()
    net.advance(net.config.heartbeat_interval)
    return index


def test_a_learner_receives_the_log_but_never_votes_or_counts() -> None:
    net = Net(IDS3, seed=1, config=PLAIN)
    net.elect("a")
    net.propose("a", b"before")
    net.add_node("d")
    change(net, "a", T.ADD_LEARNER, "d")
    assert net["a"].conf_state == ConfState(("a", "b", "c"), ("d",))
    assert net["d"].learners == ("d",) and net["d"].role is Role.FOLLOWER
    assert net.applied_data("d") == [b"before"]
    # The learner's acknowledgement does not make a quorum: a and d alone commit nothing.
    net.isolate("b")
    net.isolate("c")
    net.cut -= {("a", "d"), ("d", "a")}
    idx = net.propose("a", b"x")
    net.advance(net.config.heartbeat_interval * 2)
    assert net["d"].last_index >= idx and net["a"].commit_index < idx
    # And it never campaigns, however long it hears nothing.
    assert net["d"].next_deadline() is None
    net.isolate("d")
    net.advance(net.config.election_timeout_max * 5)
    assert net["d"].role is Role.FOLLOWER and net["d"].term == net["a"].term


def test_promotion_waits_until_the_learner_has_caught_up() -> None:
    net = Net(IDS3, seed=2, config=PLAIN)
    net.elect("a")
    net.add_node("d")
    change(net, "a", T.ADD_LEARNER, "d")
    net.isolate("d")
    for k in range(net.config.max_promote_lag + 5):
        net["a"].propose(b"%d" % k, net.now)
    net.deliver()
    with pytest.raises(ConfChangeError, match="caught up"):
        net["a"].propose_conf_change(ConfChange(T.PROMOTE_LEARNER, "d"), net.now)
    net.heal()
    net.advance(net.config.heartbeat_interval * 2)
    change(net, "a", T.PROMOTE_LEARNER, "d")
    assert net["a"].voters == ("a", "b", "c", "d") and net["d"].voters == ("a", "b", "c", "d")
    assert net["d"].next_deadline() is not None  # a voter now: it would campaign
    # d now counts: with b and c down, a + d are 2 of 4 — not a quorum.
    net.crash("b")
    net.crash("c")
    idx = net.propose("a", b"y")
    net.advance(net.config.heartbeat_interval * 2)
    assert net["a"].commit_index < idx
    net.restart("b")
    net.advance(net.config.heartbeat_interval * 2)
    assert net["a"].commit_index >= idx


def test_one_change_at_a_time() -> None:
    net = Net(IDS3, seed=3, config=PLAIN)
    net.elect("a")
    net.add_node("d")
    net.add_node("e")
    net["a"].propose_conf_change(ConfChange(T.ADD_LEARNER, "d"), net.now)
    with pytest.raises(ConfChangeError, match="one membership change at a time"):
        net["a"].propose_conf_change(ConfChange(T.ADD_LEARNER, "e"), net.now)
    net.deliver()  # committed and applied: the next one may go
    net["a"].propose_conf_change(ConfChange(T.ADD_LEARNER, "e"), net.now)
    net.deliver()
    assert net["a"].learners == ("d", "e")


def test_a_new_leader_applies_its_first_entry_before_any_change() -> None:
    net = Net(IDS3, seed=4, config=PLAIN)
    net.elect("a")
    net.drop = lambda m: isinstance(m, AppendEntries)  # the no-op cannot commit
    net.elect("b")
    assert net["b"].pending_conf_index == net["b"].last_index
    with pytest.raises(ConfChangeError, match="not applied"):
        net["b"].propose_conf_change(ConfChange(T.REMOVE_VOTER, "c"), net.now)
    net.drop = None
    net.advance(net.config.heartbeat_interval)
    net["b"].propose_conf_change(ConfChange(T.REMOVE_VOTER, "c"), net.now)


@pytest.mark.parametrize(
    ("kind", "node", "words"),
    [
        (T.ADD_VOTER, "b", "already a voter"),
        (T.ADD_VOTER, "l", "promote it"),
        (T.ADD_LEARNER, "b", "is a voter"),
        (T.ADD_LEARNER, "l", "already a learner"),
        (T.PROMOTE_LEARNER, "b", "not a learner"),
        (T.PROMOTE_LEARNER, "zz", "not a learner"),
        (T.REMOVE_VOTER, "l", "not a voter"),
        (T.REMOVE_LEARNER, "b", "not a learner"),
    ],
)
def test_changes_that_do_not_fit_the_membership_are_refused(
    kind: ConfChangeType, node: str, words: str
) -> None:
    st = MemoryStorage(conf_state=ConfState(("a", "b", "c"), ("l",)))
    net = Net(IDS3, seed=5, config=PLAIN, storages={"a": st})
    net.elect("a")
    last = net["a"].last_index
    with pytest.raises(ConfChangeError, match=words):
        net["a"].propose_conf_change(ConfChange(kind, node), net.now)
    assert net["a"].last_index == last  # nothing appended


def test_the_last_voter_cannot_be_removed_and_bad_input_is_a_local_error() -> None:
    net = Net(["a"], seed=6, config=PLAIN)
    net.elect("a")
    with pytest.raises(ConfChangeError, match="last voter"):
        net["a"].propose_conf_change(ConfChange(T.REMOVE_VOTER, "a"), net.now)
    with pytest.raises(LocalProtocolError):
        net["a"].propose_conf_change(ConfChange(T.ADD_VOTER, ""), net.now)
    with pytest.raises(LocalProtocolError):
        net["a"].propose_conf_change("add b", net.now)  # type: ignore[arg-type]
    with pytest.raises(NotLeader):
        Net(IDS3, seed=6)["b"].propose_conf_change(ConfChange(T.ADD_LEARNER, "d"), 0)


def test_removing_a_follower_shrinks_the_quorum() -> None:
    net = Net(["a", "b", "c", "d", "e"], seed=7)
    lead = net.wait_leader()
    removed = [i for i in net.ids if i != lead][-2:]
    for i in removed:
        change(net, lead, T.REMOVE_VOTER, i)
    kept = tuple(i for i in net.ids if i not in removed)
    assert net[lead].voters == kept
    # With 3 voters, the leader and one more are a quorum although three nodes are down.
    down = [i for i in net.ids if i != lead][1:]
    for i in down:
        net.crash(i)
    idx = net.propose(lead, b"z")
    assert net[lead].commit_index == idx
    # A removed node that comes back gets nothing from the leader, and cannot disrupt it
    # (its pre-votes are ignored by nodes within their leader's lease).
    net.restart(removed[0])
    since = len(net.delivered)
    net.advance(net.config.election_timeout_max * 3)
    assert net.leader() == lead
    assert not any(m.dst == removed[0] and m.src == lead for m in net.delivered[since:])


def test_a_removed_leader_steps_down_and_a_successor_takes_over_at_once() -> None:
    net = Net(IDS3, seed=8)  # pre-vote and check-quorum on: the lease must not delay it
    lead = net.wait_leader()
    net.propose(lead, b"kept")
    seen: list[TimeoutNow] = []
    net.rewrite = lambda m: (seen.append(m) if isinstance(m, TimeoutNow) else None) or m
    net[lead].propose_conf_change(ConfChange(T.REMOVE_VOTER, lead), net.now)
    net.deliver()  # no time passes: the successor is elected by TimeoutNow, not by a timeout
    assert net[lead].role is Role.FOLLOWER and lead not in net[lead].voters
    assert net[lead].next_deadline() is None  # outside the group: it never campaigns
    assert seen and seen[0].src == lead
    new = net.leader()
    assert (
        new is not None and new != lead and net[new].voters == tuple(i for i in IDS3 if i != lead)
    )
    net.rewrite = None
    idx = net.propose(new, b"after")
    assert net[new].commit_index == idx
    others = [i for i in IDS3 if i != lead]
    net.advance(net.config.heartbeat_interval)
    for i in others:
        assert net.applied_data(i) == [b"kept", b"after"]


def test_growing_from_one_voter_to_five_and_back_to_three() -> None:
    net = Net(["a"], seed=9)
    net.elect("a")
    for n in ("b", "c", "d", "e"):
        net.add_node(n)
        change(net, "a", T.ADD_LEARNER, n)
        net.advance(net.config.heartbeat_interval)
        change(net, "a", T.PROMOTE_LEARNER, n)
        net.propose("a", n.encode())
    assert net["a"].voters == ("a", "b", "c", "d", "e")
    change(net, "a", T.REMOVE_VOTER, "e")
    change(net, "a", T.REMOVE_VOTER, "a")  # the leader removes itself last
    lead = net.wait_leader()
    assert lead in ("b", "c", "d") and net[lead].voters == ("b", "c", "d")
    net.propose(lead, b"end")
    net.advance(net.config.heartbeat_interval)
    for i in ("b", "c", "d"):
        assert net.applied_data(i) == [b"b", b"c", b"d", b"e", b"end"]
    # c replayed every change from the log, in order, as it applied it.
    events = [ev for node, ev in net.events if node == "c" and isinstance(ev, ConfChanged)]
    expected = [T.ADD_LEARNER, T.PROMOTE_LEARNER] * 4 + [T.REMOVE_VOTER, T.REMOVE_VOTER]
    assert [ev.change.type for ev in events if ev.change] == expected
    assert events[-1].conf == ConfState(("b", "c", "d"))
    net.check_log_matching()


def test_restarted_node_rebuilds_its_membership_from_the_log() -> None:
    net = Net(IDS3, seed=10, config=PLAIN)
    net.elect("a")
    net.add_node("d")
    change(net, "a", T.ADD_LEARNER, "d")
    change(net, "a", T.REMOVE_VOTER, "c")
    net.crash("b")
    net.restart("b")  # applied = 0: the changes are replayed as the committed log is applied
    net.advance(net.config.heartbeat_interval)
    assert net["b"].conf_state == ConfState(("a", "b"), ("d",))
    # A driver whose state machine survived passes its applied index: replayed at once.
    st = net.storages["b"]
    node = RaftNode("b", IDS3, st, PLAIN, random.Random(0), applied=st.hard_state.commit)
    assert node.conf_state == ConfState(("a", "b"), ("d",))


def test_a_node_does_not_campaign_before_applying_committed_changes() -> None:
    node = RaftNode("c", IDS3, MemoryStorage(), PLAIN, random.Random(0))
    remove_a = Entry(2, 1, EntryKind.CONFIG, encode_change(ConfChange(T.REMOVE_VOTER, "a")))
    node.step(AppendEntries("a", "c", 1, 0, 0, (Entry(1, 1, EntryKind.NOOP), remove_a), 2), 0)
    rd = node.ready()  # hands out the CONFIG entry; not yet advanced
    deadline = node.next_deadline()
    assert deadline is not None
    node.tick(deadline)
    assert node.role is Role.FOLLOWER  # did not campaign with the stale membership
    assert (node.next_deadline() or 0) > deadline  # and does not spin on the timer
    node.advance(rd)
    assert node.voters == ("b", "c")
    node.tick(node.next_deadline() or 0)
    out = node.ready()
    assert node.role is Role.CANDIDATE
    assert [m.dst for m in out.messages if isinstance(m, VoteRequest)] == ["b"]


def test_applying_a_change_is_absolute_so_replays_are_harmless() -> None:
    rng = random.Random(11)
    nodes = ["a", "b", "c", "d"]
    kinds = list(T)
    for _ in range(200):
        conf = ConfState(("a",))
        changes = [ConfChange(rng.choice(kinds), rng.choice(nodes)) for _ in range(6)]
        states = [conf]
        for ch in changes:
            states.append(apply_change(states[-1], ch))
        cut = rng.randrange(len(changes) + 1)
        replayed = states[-1]
        for ch in changes[cut:]:
            replayed = apply_change(replayed, ch)
        assert replayed == states[-1], (changes, cut)
        assert not set(replayed.voters) & set(replayed.learners)


def test_a_group_founded_in_its_log_needs_no_bootstrap_list_anywhere() -> None:
    """The founding voter writes its membership into its log; joiners start with nothing
    (``voters=()``) and learn the membership history from the log."""
    founder = MemoryStorage()
    entries, hs = bootstrap_entries(["a"])
    founder.append(entries)
    founder.set_hard_state(hs)
    net = Net(["a"], seed=12, storages={"a": founder})
    net.node_voters["a"] = ()
    net.restart("a")  # constructed with voters=(): membership from the log only
    lead = net.wait_leader()
    assert lead == "a" and net["a"].voters == ("a",)
    net.propose("a", b"x")
    for n in ("b", "c"):
        net.add_node(n, voters=())
        assert net[n].next_deadline() is None  # a joiner never campaigns on its own
        change(net, "a", T.ADD_LEARNER, n)
        change(net, "a", T.PROMOTE_LEARNER, n)
    assert net["c"].conf_state == net["a"].conf_state == ConfState(("a", "b", "c"))
    # The founder can now leave: the others elect a leader among themselves.
    change(net, "a", T.REMOVE_VOTER, "a")
    new = net.wait_leader()
    assert new in ("b", "c") and net[new].voters == ("b", "c")
    with pytest.raises(LocalProtocolError):
        bootstrap_entries([])


def test_check_quorum_counts_voters_not_learners() -> None:
    net = Net(IDS3, seed=13)
    lead = net.wait_leader()
    for n in ("l1", "l2"):
        net.add_node(n)
        change(net, lead, T.ADD_LEARNER, n)
    voters = [i for i in IDS3 if i != lead]
    net.partition([lead, "l1", "l2"], voters)  # the learners still answer; no voter does
    net.advance(net.config.election_timeout_min * 2 + net.config.heartbeat_interval)
    assert net[lead].role is not Role.LEADER
