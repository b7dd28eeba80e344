"""Raft §8 (thesis ch. 6, §3.10) client interaction: ReadIndex linearizable reads and
leadership transfer."""

from __future__ import annotations

import pytest

from consensus.errors import LeadershipTransferring, LocalProtocolError, NotLeader
from consensus.messages import (
    AppendEntries,
    ConfChange,
    ConfChangeType,
    Heartbeat,
    HeartbeatResponse,
    ReadIndexRequest,
    TimeoutNow,
    VoteRequest,
)
from consensus.raft import ReadIndexFailed, ReadState, Role, TransferAborted
from tests.consensus.raft_net import Net, cfg

IDS3 = ["a", "b", "c"]
IDS5 = ["a", "b", "c", "d", "e"]
PLAIN = cfg(pre_vote=False, check_quorum=False)


def failed_reads(net: Net, node: str) -> list[ReadIndexFailed]:
    return [ev for i, ev in net.events if i == node and isinstance(ev, ReadIndexFailed)]


# --- ReadIndex ----------------------------------------------------------------------------------


def test_leader_serves_a_read_after_a_quorum_confirms_its_leadership() -> None:
    net = Net(IDS3, seed=1)
    lead = net.wait_leader()
    idx = net.propose(lead, b"w")
    held: list[HeartbeatResponse] = []
    net.rewrite = lambda m: held.append(m) if isinstance(m, HeartbeatResponse) else m
    net[lead].read_index(b"r1", net.now)
    net.deliver()
    assert net.read_states[lead] == []  # no acknowledgement yet: no answer
    rounds = [m for m in net.delivered if isinstance(m, Heartbeat) and m.context]
    assert len(rounds) == 2  # one heartbeat per follower, carrying the round
    net.rewrite = None
    net.queue.append(held[0])  # one follower's ack + the leader itself = a quorum of 3
    net.deliver()
    assert net.read_states[lead] == [ReadState(b"r1", idx)]


def test_single_voter_serves_reads_at_once() -> None:
    net = Net(["a"], seed=2)
    net.elect("a")
    net["a"].read_index(b"r", net.now)
    net.flush()
    assert net.read_states["a"] == [ReadState(b"r", net["a"].commit_index)]


def test_a_deposed_leader_never_answers_and_fails_its_reads() -> None:
    net = Net(IDS5, seed=3)
    lead = net.wait_leader()
    net.isolate(lead)
    net[lead].read_index(b"stale?", net.now)
    net.advance(net.config.election_timeout_max * 3)
    assert net.read_states[lead] == []
    assert net[lead].role is not Role.LEADER  # check-quorum deposed it
    assert [ev.context for ev in failed_reads(net, lead)] == [b"stale?"]


def test_a_new_leader_serves_reads_only_after_committing_an_entry_of_its_term() -> None:
    net = Net(IDS3, seed=4, config=PLAIN)
    net.elect("a")
    old = net.propose("a", b"w")
    net.drop = lambda m: isinstance(m, AppendEntries)  # b's no-op cannot commit
    net.elect("b")
    net["b"].read_index(b"r", net.now)
    net.advance(net.config.heartbeat_interval * 2)  # heartbeats are acknowledged...
    assert net.read_states["b"] == []  # ...but the read waits for the no-op
    net.drop = None
    net.advance(net.config.heartbeat_interval * 2)
    ((ctx, index),) = [(rs.context, rs.index) for rs in net.read_states["b"]]
    assert ctx == b"r" and index > old and net["b"].term_at(index) == net["b"].term


def test_a_follower_forwards_its_read_to_the_leader() -> None:
    net = Net(IDS3, seed=5)
    lead = net.wait_leader()
    idx = net.propose(lead, b"w")
    follower = next(i for i in IDS3 if i != lead)
    net[follower].read_index(b"f1", net.now)
    net.deliver()
    assert any(isinstance(m, ReadIndexRequest) for m in net.delivered)
    assert net.read_states[follower] == [ReadState(b"f1", idx)]
    assert net.read_states[lead] == []


def test_a_follower_without_a_leader_refuses_reads() -> None:
    net = Net(IDS3, seed=6)
    with pytest.raises(NotLeader) as info:
        net["a"].read_index(b"r", net.now)
    assert info.value.leader_hint is None
    with pytest.raises(LocalProtocolError):
        net["a"].read_index(b"", net.now)


def test_a_forwarded_read_fails_when_the_leader_changes() -> None:
    net = Net(IDS3, seed=7, config=PLAIN)
    net.elect("a")
    net.drop = lambda m: isinstance(m, ReadIndexRequest)  # the request is lost
    net["c"].read_index(b"lost", net.now)
    net.deliver()
    net.drop = None
    net.elect("b")
    assert [ev.context for ev in failed_reads(net, "c")] == [b"lost"]
    assert failed_reads(net, "c")[0].leader_hint in (None, "b")


def test_a_read_forwarded_to_a_node_that_no_longer_leads_is_refused() -> None:
    net = Net(IDS3, seed=8, config=PLAIN)
    net.elect("a")
    held: list[ReadIndexRequest] = []
    net.rewrite = lambda m: held.append(m) if isinstance(m, ReadIndexRequest) else m
    net["c"].read_index(b"r", net.now)
    net.deliver()
    net.rewrite = None
    net.isolate("c")
    net.elect("b")  # a steps down; c does not know yet
    net.heal()
    net.queue.append(held[0])
    net.deliver()
    assert net.read_states["c"] == []
    assert [ev.context for ev in failed_reads(net, "c")] == [b"r"]


def test_reads_never_miss_an_acknowledged_write() -> None:
    """Linearizability of ReadIndex: a read started after a write was applied somewhere
    returns an index at or after that write, on every node, across leader changes."""
    net = Net(IDS5, seed=9)
    issued: dict[bytes, int] = {}
    for k in range(30):
        lead = net.wait_leader()
        if k % 7 == 6:
            net.isolate(lead)
            net.advance(net.config.election_timeout_max * 2)
            net.heal()
            continue
        net.propose(lead, b"w%d" % k)
        net.advance(net.config.heartbeat_interval)
        reader = IDS5[k % 5]
        ctx = b"r%d" % k
        try:
            net[reader].read_index(ctx, net.now)
        except NotLeader:
            continue
        issued[ctx] = max(net.committed)
        net.advance(net.config.heartbeat_interval * 2)
    served = {rs.context: rs.index for i in IDS5 for rs in net.read_states[i]}
    assert len(served) >= len(issued) // 2
    for ctx, index in served.items():
        assert index >= issued[ctx], (ctx, index, issued[ctx])


# --- leadership transfer ------------------------------------------------------------------------


def test_transfer_to_an_up_to_date_voter_elects_it_at_once() -> None:
    net = Net(IDS3, seed=10)  # pre-vote and check-quorum on: the lease must not stop it
    lead = net.wait_leader()
    net.propose(lead, b"w")
    target = next(i for i in IDS3 if i != lead)
    term = net[lead].term
    net[lead].transfer_leadership(target, net.now)
    net.deliver()  # no time passes
    assert net[target].role is Role.LEADER and net[target].term == term + 1
    assert net[lead].role is Role.FOLLOWER and net[lead].leader_id == target
    votes = [m for m in net.delivered if isinstance(m, VoteRequest) and m.src == target]
    assert votes and all(m.transfer for m in votes)


def test_transfer_catches_a_lagging_target_up_first() -> None:
    net = Net(IDS3, seed=11, config=PLAIN)
    net.elect("a")
    net.isolate("c")
    for k in range(10):
        net["a"].propose(b"%d" % k, net.now)
    net.deliver()
    net.heal()
    net["a"].transfer_leadership("c", net.now)
    net.deliver()
    order = [type(m).__name__ for m in net.delivered if m.dst == "c" and m.src == "a"]
    assert "TimeoutNow" in order
    assert order.index("TimeoutNow") > max(i for i, t in enumerate(order) if t == "AppendEntries")
    assert net["c"].role is Role.LEADER
    assert net.applied_data("c")[:10] == [b"%d" % k for k in range(10)]


def test_no_proposals_or_changes_while_transferring() -> None:
    net = Net(IDS3, seed=12, config=PLAIN)
    net.elect("a")
    net.crash("c")
    net["a"].transfer_leadership("c", net.now)
    assert net["a"].transferee == "c"
    with pytest.raises(LeadershipTransferring) as info:
        net["a"].propose(b"x", net.now)
    assert info.value.leader_hint == "c" and isinstance(info.value, NotLeader)
    with pytest.raises(LeadershipTransferring):
        net["a"].propose_conf_change(ConfChange(ConfChangeType.REMOVE_VOTER, "b"), net.now)


def test_transfer_aborts_after_an_election_timeout() -> None:
    net = Net(IDS3, seed=13, config=PLAIN)
    net.elect("a")
    net.crash("c")
    net["a"].transfer_leadership("c", net.now)
    start = net.now
    net.run_until(lambda: net["a"].transferee is None, limit=net.config.election_timeout_max)
    assert net.now - start >= net.config.election_timeout_min
    aborted = [ev for i, ev in net.events if i == "a" and isinstance(ev, TransferAborted)]
    assert aborted == [TransferAborted("c", net["a"].term)]
    assert net["a"].role is Role.LEADER
    net.propose("a", b"again")  # accepted again


def test_transfer_misuse() -> None:
    net = Net(IDS3, seed=14, config=PLAIN)
    net.elect("a")
    with pytest.raises(NotLeader):
        net["b"].transfer_leadership("c", net.now)
    with pytest.raises(LocalProtocolError, match="not a voter"):
        net["a"].transfer_leadership("zz", net.now)
    net.crash("c")
    net["a"].transfer_leadership("c", net.now)
    net["a"].transfer_leadership("a", net.now)  # to itself: cancels
    assert net["a"].transferee is None
    net.propose("a", b"ok")


def test_timeout_now_is_ignored_by_a_non_voter() -> None:
    net = Net(IDS3, seed=15, config=PLAIN)
    net.elect("a")
    net.add_node("d")
    net["a"].propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, "d"), net.now)
    net.deliver()
    net.queue.append(TimeoutNow("a", "d", net["a"].term))
    net.deliver()
    assert net["d"].role is Role.FOLLOWER and net["a"].role is Role.LEADER


def test_a_pending_read_is_released_when_a_removal_shrinks_the_quorum() -> None:
    net = Net(IDS5, seed=16, config=PLAIN)
    net.elect("a")
    net.propose("a", b"w")
    for i in ("d", "e"):
        net.crash(i)
    net.drop = lambda m: isinstance(m, HeartbeatResponse) and m.src == "c"
    net["a"].read_index(b"r", net.now)
    net.deliver()
    assert net.read_states["a"] == []  # a and b acknowledged: 2 of 5
    net.drop = None
    net.restart("d")  # lets the removal of e commit (a, b, d)
    net["a"].propose_conf_change(ConfChange(ConfChangeType.REMOVE_VOTER, "e"), net.now)
    net.crash("d")
    net.deliver()
    net["a"].propose_conf_change(ConfChange(ConfChangeType.REMOVE_VOTER, "d"), net.now)
    net.drop = lambda m: isinstance(m, HeartbeatResponse) and m.src == "c"
    net.deliver()
    # a, b, c are the voters now: a's and b's acknowledgements of the round are a quorum.
    assert net["a"].voters == ("a", "b", "c")
    assert [rs.context for rs in net.read_states["a"]] == [b"r"]
