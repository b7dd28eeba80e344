"""Pre-vote and check-quorum (Raft thesis §9.6): disruptive servers and deposed leaders."""

from __future__ import annotations

import random

from consensus.messages import PreVoteRequest, PreVoteResponse, VoteRequest, VoteResponse
from consensus.raft import RaftNode, Role
from consensus.storage import MemoryStorage
from tests.consensus.raft_net import Net, cfg, preload

IDS3 = ["a", "b", "c"]
IDS5 = ["a", "b", "c", "d", "e"]


def test_pre_candidate_does_not_bump_its_term() -> None:
    node = RaftNode("a", IDS3, MemoryStorage(), cfg(), random.Random(1))
    node.campaign(0)
    assert node.role is Role.PRE_CANDIDATE and node.term == 0 and node.vote is None
    msgs = node.ready().messages
    assert all(isinstance(m, PreVoteRequest) and m.term == 1 for m in msgs)
    assert sorted(m.dst for m in msgs) == ["b", "c"]


def test_pre_vote_majority_leads_to_a_real_election() -> None:
    node = RaftNode("a", IDS3, MemoryStorage(), cfg(), random.Random(1))
    node.campaign(0)
    node.advance(node.ready())
    node.step(PreVoteResponse("b", "a", 1, reject=False), 0)
    assert node.role is Role.CANDIDATE and node.term == 1 and node.vote == "a"
    rd = node.ready()
    assert all(isinstance(m, VoteRequest) and m.term == 1 for m in rd.messages)


def test_pre_vote_rejected_by_majority_returns_to_follower() -> None:
    node = RaftNode("a", IDS3, MemoryStorage(), cfg(), random.Random(1))
    node.campaign(0)
    node.step(PreVoteResponse("b", "a", 0, reject=True), 0)
    node.step(PreVoteResponse("c", "a", 0, reject=True), 0)
    assert node.role is Role.FOLLOWER and node.term == 0


def test_granting_a_pre_vote_changes_neither_term_nor_vote() -> None:
    node = RaftNode("c", IDS3, MemoryStorage(), cfg(), random.Random(1))
    node.step(PreVoteRequest("a", "c", 5, 0, 0), 0)
    (resp,) = node.ready().messages
    assert isinstance(resp, PreVoteResponse) and not resp.reject and resp.term == 5
    assert node.term == 0 and node.vote is None


def test_pre_vote_refused_to_a_candidate_with_a_stale_log() -> None:
    node = RaftNode("c", IDS3, preload([1, 2]), cfg(), random.Random(1))
    node.step(PreVoteRequest("a", "c", 3, 5, 1), 0)
    (resp,) = node.ready().messages
    assert isinstance(resp, PreVoteResponse) and resp.reject


def test_rejoining_partitioned_node_does_not_disrupt_the_leader() -> None:
    net = Net(IDS5, seed=1)
    lead = net.wait_leader()
    term = net[lead].term
    loner = next(i for i in net.ids if i != lead)
    net.isolate(loner)
    net.advance(net.config.election_timeout_max * 10)  # many failed pre-votes
    assert net[loner].term == term  # pre-vote kept its term from growing
    net.heal()
    net.advance(net.config.election_timeout_max * 3)
    assert net.leader() == lead and net[lead].term == term
    assert net[loner].leader_id == lead


def test_without_pre_vote_a_rejoining_node_forces_a_new_term() -> None:
    net = Net(IDS5, seed=1, config=cfg(pre_vote=False, check_quorum=False))
    lead = net.wait_leader()
    term = net[lead].term
    loner = next(i for i in net.ids if i != lead)
    net.isolate(loner)
    net.advance(net.config.election_timeout_max * 10)
    assert net[loner].term > term + 3  # it kept campaigning
    net.heal()
    net.advance(net.config.election_timeout_max * 2)
    new = net.wait_leader()
    assert net[new].term > term  # the old leader was disrupted


def test_isolated_leader_steps_down_and_majority_elects_another() -> None:
    net = Net(IDS5, seed=2)
    old = net.wait_leader()
    net.isolate(old)
    net.advance(net.config.election_timeout_min * 2 + 1)
    assert net[old].role is Role.FOLLOWER and net[old].leader_id is None
    net.run_until(lambda: any(net[i].role is Role.LEADER for i in net.ids if i != old))
    new = net.leader()
    assert new != old
    net.heal()
    net.advance(net.config.election_timeout_max * 2)
    assert net[old].leader_id == new


def test_without_check_quorum_an_isolated_leader_keeps_believing() -> None:
    net = Net(IDS3, seed=2, config=cfg(pre_vote=False, check_quorum=False))
    net.elect("a")
    net.isolate("a")
    net.advance(net.config.election_timeout_max * 5)
    assert net["a"].role is Role.LEADER


def test_follower_within_its_lease_ignores_higher_term_vote_requests() -> None:
    net = Net(IDS3, seed=3)
    lead = net.wait_leader()
    term = net[lead].term
    f = next(i for i in net.ids if i != lead)
    other = next(i for i in net.ids if i not in (lead, f))
    net[f].step(VoteRequest(other, f, term + 5, 100, term + 1), net.now)
    assert net[f].term == term and net[f].leader_id == lead
    assert not any(isinstance(m, VoteResponse) for m in net[f].ready().messages)


def test_transfer_vote_requests_bypass_the_lease() -> None:
    net = Net(IDS3, seed=3)
    lead = net.wait_leader()
    term = net[lead].term
    f = next(i for i in net.ids if i != lead)
    other = next(i for i in net.ids if i not in (lead, f))
    last = net[f].last_index
    net[f].step(VoteRequest(other, f, term + 1, last, term, transfer=True), net.now)
    assert net[f].term == term + 1 and net[f].vote == other


def test_follower_past_its_lease_grants_votes_again() -> None:
    net = Net(IDS3, seed=4)
    lead = net.wait_leader()
    term = net[lead].term
    net.crash(lead)
    f = next(i for i in net.ids if i != lead)
    other = next(i for i in net.ids if i not in (lead, f))
    net.now += net.config.election_timeout_min
    last = net[f].last_index
    net[f].step(VoteRequest(other, f, term + 1, last, term), net.now)
    assert net[f].term == term + 1 and net[f].vote == other


def test_stale_leader_learns_the_new_term_from_an_append_response() -> None:
    net = Net(IDS3, seed=5)
    old = net.wait_leader()
    net.isolate(old)
    net.run_until(lambda: any(net[i].role is Role.LEADER for i in net.ids if i != old))
    new = net.leader()
    assert new is not None and net[new].term > net[old].term
    net.heal()
    net.run_until(lambda: net[old].term == net[new].term and net[old].leader_id == new)
