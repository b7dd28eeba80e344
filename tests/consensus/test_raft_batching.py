"""Batching and the leader's parallel fsync (Raft thesis §10.2.1).

- Proposals made between two Readies leave as ONE AppendEntries per follower.
- A leader's appends may leave before its own persist (``Ready.early``); its own entries count
  toward commit only once ``advance`` says they are persisted.
- A leader that crashes after sending but before its fsync loses nothing that was committed:
  the followers that acknowledged hold it, and the next leader commits it everywhere.
"""

from __future__ import annotations

import random

from consensus.messages import AppendEntries, AppendResponse, Heartbeat, VoteRequest
from consensus.raft import RaftConfig, RaftNode, Role
from consensus.storage import MemoryStorage
from tests.consensus.raft_net import Net, cfg

IDS3 = ["a", "b", "c"]
PLAIN = cfg(pre_vote=False, check_quorum=False)


def _appends(msgs: list[object]) -> dict[str, list[AppendEntries]]:
    out: dict[str, list[AppendEntries]] = {}
    for m in msgs:
        if isinstance(m, AppendEntries):
            out.setdefault(m.dst, []).append(m)
    return out


def test_proposals_made_together_leave_as_one_append_per_follower() -> None:
    for seed in range(5):
        net = Net(IDS3, seed=seed, config=PLAIN)
        net.elect("a")
        lead = net["a"]
        first = lead.last_index + 1
        for i in range(10):
            lead.propose(f"cmd{i}".encode(), net.now)
        rd = lead.ready()
        per = _appends(rd.messages)
        assert sorted(per) == ["b", "c"], f"seed {seed}"
        for dst, aes in per.items():
            assert len(aes) == 1, f"seed {seed}: {len(aes)} appends to {dst}"
            assert [e.index for e in aes[0].entries] == list(range(first, first + 10))
        net._handle("a", rd)
        net.deliver()
        for i in IDS3:
            assert net.applied_data(i) == [f"cmd{k}".encode() for k in range(10)], f"seed {seed}"


def test_a_leaders_appends_are_early_and_acknowledgements_are_not() -> None:
    net = Net(IDS3, seed=7, config=PLAIN)
    net.elect("a")
    lead = net["a"]
    lead.propose(b"x", net.now)
    rd = lead.ready()
    assert rd.early == len(rd.messages) == 2
    assert all(isinstance(m, AppendEntries | Heartbeat) for m in rd.messages[: rd.early])
    net._handle("a", rd)
    # a follower's Ready holds its acknowledgement: it must wait for the follower's persist
    msg = net.queue.popleft()
    net["b"].step(msg, net.now)
    frd = net["b"].ready()
    assert frd.entries and any(isinstance(m, AppendResponse) for m in frd.messages)
    assert frd.early == 0


def test_a_candidates_votes_requests_wait_for_its_persist() -> None:
    net = Net(IDS3, seed=8, config=PLAIN)
    net["a"].campaign(net.now)
    rd = net["a"].ready()
    assert any(isinstance(m, VoteRequest) for m in rd.messages)
    assert rd.early == 0


def test_the_leader_counts_its_own_entry_only_once_persisted() -> None:
    net = Net(IDS3, seed=9, config=PLAIN)
    net.elect("a")
    net.crash("c")
    lead = net["a"]
    commit0 = lead.commit_index
    idx = lead.propose(b"v", net.now)
    assert net.hold("a")  # a slow disk: the Ready is taken, not yet persisted
    rd = net.held_ready["a"]
    for m in rd.messages[: rd.early]:  # the early appends leave before the persist
        net.queue.append(m)
    net.deliver()  # b persists and acknowledges; a alone has not persisted
    assert net["b"].last_index == idx
    assert lead.commit_index == commit0, "b alone is not a quorum of 3 without a's disk"
    net.release("a")  # a's persist completes: now a and b hold it durably
    net.deliver()
    assert lead.commit_index == idx
    assert net.applied_data("a") == [b"v"]


def test_a_leader_crashing_between_send_and_fsync_loses_nothing_acknowledged() -> None:
    for seed in range(6):
        net = Net(IDS3, seed=seed, config=PLAIN)
        net.elect("a")
        net.propose("a", b"before")
        lead = net["a"]
        idx = lead.propose(b"during", net.now)
        assert net.hold("a")
        rd = net.held_ready["a"]
        for m in rd.messages[: rd.early]:
            net.queue.append(m)
        net.deliver()  # b and c persist and acknowledge: a quorum holds "during"
        assert lead.commit_index == idx, f"seed {seed}: committed by b and c"
        net.crash("a")  # before its own fsync: the held Ready (and a's copy) is lost
        assert net.storages["a"].last_index() < idx
        net.run_until(lambda n=net: n.leader() in ("b", "c"))
        net.restart("a")
        net.advance(net.config.election_timeout_max * 4)
        for i in IDS3:
            assert net.applied_data(i)[:2] == [b"before", b"during"], f"seed {seed}: {i}"
        net.check_log_matching()


def test_a_single_voter_that_just_elected_itself_sends_nothing_early() -> None:
    # its term is not durable yet: an append of that term sent before the persist could be
    # contradicted by the same term reused after a crash
    node = RaftNode("a", ["a"], MemoryStorage(), RaftConfig.local(), random.Random(1))
    node.campaign(0)
    assert node.role is Role.LEADER
    rd = node.ready()
    assert rd.hard_state is not None and rd.hard_state.term == node.term
    assert rd.early == 0
    assert node._order_early([AppendEntries("a", "b", node.term, 0, 0, (), 0)]) == (
        [AppendEntries("a", "b", node.term, 0, 0, (), 0)],
        0,
    )


def test_random_crashes_between_early_send_and_persist_keep_raft_safe() -> None:
    """Leaders whose Ready is held (a slow disk) while their early appends reach some
    followers, then crash or persist, at random: the net's checkers (state machine safety,
    election safety, leader append-only and completeness, log matching) must hold."""
    for seed in range(30):
        rng = random.Random(f"early/{seed}")
        net = Net(IDS3, seed=seed)
        hb = net.config.heartbeat_interval
        net.wait_leader()
        proposed = 0
        for _ in range(25):
            lead = net.leader()
            if lead is None or net[lead].transferee is not None:
                net.advance(net.config.election_timeout_max)
                continue
            for _ in range(rng.randint(1, 4)):
                net[lead].propose(f"s{seed}/{proposed}".encode(), net.now)
                proposed += 1
            if rng.random() < 0.6 and net.hold(lead):
                rd = net.held_ready[lead]
                for m in rd.messages[: rd.early]:
                    if rng.random() < 0.7:
                        net.queue.append(m)
                net.deliver()
                if rng.random() < 0.5:
                    net.crash(lead)  # its Ready (and its own copy of the entries) is lost
                    net.advance(rng.randrange(1, 4) * hb)
                    net.restart(lead)
                else:
                    net.release(lead)
            net.advance(rng.randrange(1, 3) * hb)
        net.heal()
        net.advance(net.config.election_timeout_max * 6)
        net.check_log_matching()
        applied = [net.applied[i] for i in IDS3]
        shortest = min(len(a) for a in applied)
        assert shortest > 0, f"seed {seed}: nothing applied"
        for a in applied:
            assert a[:shortest] == applied[0][:shortest], f"seed {seed}"


def test_a_commit_notice_may_wait_for_the_next_append_when_entries_are_pending() -> None:
    """``append_pending``: entries proposed since the last Ready reach a replicating follower
    in the next one, carrying the commit index, so a driver may drop the empty append that
    only announced the commit (not to a follower the next Ready would not reach)."""
    net = Net(IDS3, seed=11, config=PLAIN)
    net.elect("a")
    lead = net["a"]
    lead.propose(b"x", net.now)
    net.deliver()  # replicated and committed everywhere: b and c replicate
    assert not lead.append_pending("b")  # nothing proposed since
    lead.propose(b"y", net.now)
    assert lead.append_pending("b") and lead.append_pending("c")
    rd = lead.ready()
    per = _appends(rd.messages)
    assert [len(per[f]) for f in ("b", "c")] == [1, 1]
    assert all(aes[0].commit == lead.commit_index for aes in per.values())
    assert not lead.append_pending("b")  # taken by that Ready
    net._handle("a", rd)
    assert not net["b"].append_pending("a")  # only a leader has appends pending
