"""Raft §5.2 leader election: timeouts, votes, one leader per term, durable votes."""

from __future__ import annotations

import random

import pytest

from consensus.messages import (
    AppendEntries,
    AppendResponse,
    HardState,
    Heartbeat,
    VoteRequest,
    VoteResponse,
)
from consensus.raft import LeaderChanged, RaftNode, Role, RoleChanged
from consensus.storage import MemoryStorage
from tests.consensus.raft_net import Net, cfg, preload

IDS3 = ["a", "b", "c"]
IDS5 = ["a", "b", "c", "d", "e"]
PLAIN = cfg(pre_vote=False, check_quorum=False)


def lone(node_id: str = "a", peers: list[str] | None = None, **kw: object) -> RaftNode:
    st = kw.pop("storage", None) or MemoryStorage()
    conf = kw.pop("config", None) or PLAIN
    return RaftNode(node_id, peers or IDS3, st, conf, random.Random(1), **kw)  # type: ignore[arg-type]


def test_nodes_start_as_followers_with_a_randomized_election_deadline() -> None:
    conf = cfg()
    for seed in range(20):
        node = RaftNode("a", IDS3, MemoryStorage(), conf, random.Random(seed), now=1000)
        assert node.role is Role.FOLLOWER and node.term == 0 and node.leader_id is None
        deadline = node.next_deadline()
        assert deadline is not None
        assert 1000 + conf.election_timeout_min <= deadline < 1000 + conf.election_timeout_max


def test_timeouts_differ_between_nodes_seeded_differently() -> None:
    deadlines = {
        RaftNode("a", IDS3, MemoryStorage(), cfg(), random.Random(s)).next_deadline()
        for s in range(10)
    }
    assert len(deadlines) > 5


def test_follower_campaigns_when_its_election_timeout_fires() -> None:
    node = lone()
    deadline = node.next_deadline()
    assert deadline is not None
    node.tick(deadline - 1)
    assert node.role is Role.FOLLOWER
    node.tick(deadline)
    assert node.role is Role.CANDIDATE and node.term == 1 and node.vote == "a"
    rd = node.ready()
    votes = [m for m in rd.messages if isinstance(m, VoteRequest)]
    assert sorted(m.dst for m in votes) == ["b", "c"]
    assert all(m.term == 1 and m.src == "a" for m in votes)
    assert rd.hard_state == HardState(term=1, vote="a", commit=0)
    assert RoleChanged(Role.CANDIDATE, 1) in rd.events


def test_single_node_cluster_elects_itself_and_commits_a_noop() -> None:
    net = Net(["solo"], seed=3)
    lead = net.wait_leader()
    assert lead == "solo" and net["solo"].term == 1
    assert net["solo"].commit_index == 1
    assert [e.kind.name for e in net.applied["solo"]] == ["NOOP"]


@pytest.mark.parametrize("size", [3, 5])
@pytest.mark.parametrize("seed", range(8))
def test_exactly_one_leader_is_elected_and_recognised(size: int, seed: int) -> None:
    net = Net(IDS5[:size], seed=seed)
    lead = net.wait_leader()
    net.advance(net.config.election_timeout_max * 3)  # stays stable with heartbeats
    assert net.leader() == lead, f"seed {seed}"
    term = net[lead].term
    for i in net.ids:
        assert net[i].leader_id == lead and net[i].term == term, f"seed {seed}"
    net.check_log_matching()


def test_candidate_wins_with_majority_of_votes() -> None:
    net = Net(IDS5, seed=1, config=PLAIN)
    net.crash("d")
    net.crash("e")
    net.elect("a")  # 3 of 5 votes suffice
    assert net["a"].term == 1
    assert net["b"].leader_id == "a"


def test_candidate_without_majority_does_not_win() -> None:
    net = Net(IDS5, seed=1, config=PLAIN)
    for i in ("c", "d", "e"):
        net.crash(i)
    net["a"].campaign(net.now)
    net.deliver()
    assert net["a"].role is Role.CANDIDATE


def test_each_node_votes_at_most_once_per_term() -> None:
    node = lone("c")
    node.step(VoteRequest("a", "c", 1, 0, 0), 0)
    node.step(VoteRequest("b", "c", 1, 0, 0), 0)
    msgs = [m for m in node.ready().messages if isinstance(m, VoteResponse)]
    assert [(m.dst, m.reject) for m in msgs] == [("a", False), ("b", True)]
    assert node.vote == "a"


def test_repeated_request_from_the_same_candidate_is_granted_again() -> None:
    node = lone("c")
    node.step(VoteRequest("a", "c", 1, 0, 0), 0)
    node.step(VoteRequest("a", "c", 1, 0, 0), 0)
    assert [m.reject for m in node.ready().messages] == [False, False]


def test_vote_survives_restart() -> None:
    st = MemoryStorage()
    node = lone("c", storage=st)
    node.step(VoteRequest("a", "c", 4, 0, 0), 0)
    rd = node.ready()
    assert rd.hard_state == HardState(term=4, vote="a", commit=0)  # persist before replying
    st.set_hard_state(rd.hard_state)
    node.advance(rd)
    again = lone("c", storage=st)
    assert again.term == 4 and again.vote == "a"
    again.step(VoteRequest("b", "c", 4, 0, 0), 0)
    (resp,) = again.ready().messages
    assert isinstance(resp, VoteResponse) and resp.reject


def test_candidate_steps_down_when_a_leader_of_its_term_appears() -> None:
    node = lone("a")
    node.campaign(0)
    assert node.role is Role.CANDIDATE
    node.step(AppendEntries("b", "a", 1, 0, 0, (), 0), 10)
    assert node.role is Role.FOLLOWER and node.leader_id == "b" and node.term == 1


def test_candidate_rejects_an_append_from_an_older_term_and_stays_candidate() -> None:
    node = lone("a")
    node.campaign(0)
    node.campaign(1)  # term 2
    node.advance(node.ready())
    node.step(AppendEntries("b", "a", 1, 0, 0, (), 0), 10)
    assert node.role is Role.CANDIDATE and node.term == 2
    (resp,) = node.ready().messages
    assert isinstance(resp, AppendResponse) and resp.term == 2  # tells the stale leader


def test_higher_term_turns_a_leader_into_a_follower() -> None:
    net = Net(IDS3, seed=2, config=PLAIN)
    net.elect("a")
    net["a"].step(Heartbeat("b", "a", 7, 0), net.now)
    assert net["a"].role is Role.FOLLOWER and net["a"].term == 7
    assert net["a"].leader_id == "b"


def test_stale_term_messages_are_ignored() -> None:
    node = lone("c")
    node.step(VoteRequest("a", "c", 5, 0, 0), 0)
    node.ready()
    node.step(VoteRequest("b", "c", 3, 9, 9), 0)
    assert node.term == 5 and node.vote == "a"


def test_split_votes_are_resolved_by_randomized_timeouts() -> None:
    for seed in range(5):
        net = Net(IDS5, seed=seed, config=PLAIN)
        for i in net.ids:  # everyone campaigns at once: nobody can win this round
            net[i].campaign(net.now)
        net.deliver()
        net.wait_leader()
        assert sum(net[i].role is Role.LEADER for i in net.ids) == 1, f"seed {seed}"


def test_events_report_role_and_leader_changes() -> None:
    net = Net(IDS3, seed=5)
    lead = net.wait_leader()
    term = net[lead].term
    assert (lead, RoleChanged(Role.LEADER, term)) in net.events
    for i in net.ids:
        assert (i, LeaderChanged(lead, term)) in net.events


def test_restarted_cluster_keeps_its_term_and_log() -> None:
    storages = {i: preload([1, 1, 2]) for i in IDS3}
    net = Net(IDS3, seed=9, storages=storages)
    lead = net.wait_leader()
    assert net[lead].term >= 3
    assert net.log_terms(lead)[:3] == [1, 1, 2]
