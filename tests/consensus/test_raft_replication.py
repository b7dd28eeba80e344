"""Raft §5.3 log replication: commit, catch-up, conflicts, fast back-off, flow control."""

from __future__ import annotations

import pytest

from consensus.errors import NotLeader
from consensus.messages import AppendEntries, AppendResponse, EntryKind, Heartbeat
from consensus.raft import Role
from consensus.raft_progress import ProgressState
from tests.consensus.raft_net import Net, cfg, preload

IDS3 = ["a", "b", "c"]
IDS5 = ["a", "b", "c", "d", "e"]
PLAIN = cfg(pre_vote=False, check_quorum=False)


def test_leader_replicates_proposals_and_every_node_applies_them_in_order() -> None:
    net = Net(IDS3, seed=1)
    lead = net.wait_leader()
    indices = [net.propose(lead, f"cmd{i}".encode()) for i in range(20)]
    assert indices == list(range(indices[0], indices[0] + 20))
    net.advance(net.config.heartbeat_interval * 2)
    for i in net.ids:
        assert net.applied_data(i) == [f"cmd{k}".encode() for k in range(20)]
        assert net[i].commit_index == net[lead].last_index
    net.check_log_matching()


def test_proposal_on_a_follower_raises_not_leader_with_a_hint() -> None:
    net = Net(IDS3, seed=2)
    lead = net.wait_leader()
    follower = next(i for i in net.ids if i != lead)
    with pytest.raises(NotLeader) as info:
        net[follower].propose(b"x", net.now)
    assert info.value.leader_hint == lead


def test_proposal_without_known_leader_has_no_hint() -> None:
    net = Net(IDS3, seed=2)
    with pytest.raises(NotLeader) as info:
        net["a"].propose(b"x", net.now)
    assert info.value.leader_hint is None


def test_new_leader_commits_a_noop_of_its_term_first() -> None:
    net = Net(IDS3, seed=3, config=PLAIN)
    net.elect("b")
    (first,) = net["b"].log_entries()
    assert first.kind is EntryKind.NOOP and first.term == net["b"].term
    assert net["b"].commit_index == 1


def test_entry_is_committed_once_a_majority_stores_it() -> None:
    net = Net(IDS5, seed=4, config=PLAIN)
    net.elect("a")
    net.crash("d")
    net.crash("e")
    idx = net.propose("a", b"v")
    assert net["a"].commit_index == idx  # a, b, c is a majority of 5
    net.crash("c")
    idx2 = net.propose("a", b"w")
    assert net["a"].commit_index == idx  # only a, b hold w: not committed
    net.restart("c")
    net.advance(net.config.heartbeat_interval)
    assert net["a"].commit_index == idx2


def test_followers_learn_the_commit_index_from_appends_and_heartbeats() -> None:
    net = Net(IDS3, seed=5, config=PLAIN)
    net.elect("a")
    net.propose("a", b"x")
    net.advance(net.config.heartbeat_interval)
    assert net["b"].commit_index == net["c"].commit_index == net["a"].commit_index


def test_heartbeat_commit_never_exceeds_what_the_follower_holds() -> None:
    net = Net(IDS3, seed=6, config=PLAIN)
    net.elect("a")
    net.cut.add(("a", "c"))
    net.propose("a", b"x")
    net.advance(net.config.heartbeat_interval)
    beats = [m for m in net.delivered if isinstance(m, Heartbeat) and m.dst == "b"]
    assert beats and beats[-1].commit == net["a"].commit_index
    sent_to_c = [m for m in net.queue if isinstance(m, Heartbeat) and m.dst == "c"]
    assert all(m.commit <= 1 for m in sent_to_c)


def test_lagging_follower_catches_up_after_a_partition_heals() -> None:
    net = Net(IDS5, seed=7)
    lead = net.wait_leader()
    lagger = next(i for i in net.ids if i != lead)
    net.isolate(lagger)
    for k in range(150):
        net.propose(lead, f"{k}".encode())
    net.heal()
    net.run_until(lambda: net[lagger].commit_index == net[lead].commit_index)
    assert net.applied_data(lagger) == net.applied_data(lead)
    net.check_log_matching()


# The follower logs of the Raft paper's figure 7; the leader's log is [1,1,1,4,4,5,5,6,6,6].
FIGURE7 = {
    "a": [1, 1, 1, 4, 4, 5, 5, 6, 6],
    "b": [1, 1, 1, 4],
    "c": [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6],
    "d": [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7],
    "e": [1, 1, 1, 4, 4, 4, 4],
    "f": [1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],
}
LEADER_LOG = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6]


@pytest.mark.parametrize("case", sorted(FIGURE7))
def test_leader_brings_any_figure7_follower_log_in_line_with_its_own(case: str) -> None:
    storages = {
        "lead": preload(LEADER_LOG, hard_term=8),
        "f": preload(FIGURE7[case], hard_term=8),
        "z": preload([], hard_term=7),
    }
    net = Net(["f", "lead", "z"], seed=8, config=PLAIN, storages=storages)
    net.drop = lambda m: m.src == "f" and m.dst == "lead" and not isinstance(m, AppendResponse)
    net.elect("lead")
    net.heal()
    net.advance(net.config.heartbeat_interval * 2)
    assert net.log_terms("f") == [*LEADER_LOG, 9]
    assert net.log_terms("f") == net.log_terms("lead")
    rejections = [m for m in net.delivered if isinstance(m, AppendResponse) and m.reject]
    assert len(rejections) <= 3, "fast back-off skips a whole term per round trip"
    net.check_log_matching()


def test_conflict_hint_names_the_first_index_of_the_conflicting_term() -> None:
    storages = {"f": preload([1, 1, 2, 2, 2], hard_term=3), "lead": preload([1, 1, 3, 3, 3, 3])}
    net = Net(["f", "lead", "z"], seed=9, config=PLAIN, storages=storages)
    net["f"].step(AppendEntries("lead", "f", 3, 5, 3, (), 0), 0)
    (resp,) = net["f"].ready().messages
    assert isinstance(resp, AppendResponse) and resp.reject
    assert (resp.index, resp.hint_term, resp.hint_index) == (5, 2, 3)


def test_hint_for_a_short_log_points_just_past_its_end() -> None:
    storages = {"f": preload([1, 1])}
    net = Net(["f", "lead", "z"], seed=9, config=PLAIN, storages=storages)
    net["f"].step(AppendEntries("lead", "f", 3, 9, 3, (), 0), 0)
    (resp,) = net["f"].ready().messages
    assert isinstance(resp, AppendResponse) and (resp.reject, resp.hint_index, resp.hint_term) == (
        True,
        3,
        0,
    )


def test_probe_state_sends_one_append_at_a_time_until_an_answer() -> None:
    net = Net(IDS3, seed=10, config=PLAIN)
    to_c: list[AppendEntries] = []

    def swallow(m: object) -> bool:
        if isinstance(m, AppendEntries) and m.dst == "c":
            to_c.append(m)
        return getattr(m, "dst", None) == "c" or getattr(m, "src", None) == "c"

    net.drop = swallow
    net.elect("a")
    for k in range(5):
        net.propose("a", bytes([k]))
    pr = net["a"].progress("c")
    assert pr is not None
    # c never answered its first append: it stays in probe state, paused.
    assert pr.state is ProgressState.PROBE and pr.probe_sent
    assert len(to_c) == 1
    net.advance(net.config.heartbeat_interval)  # heartbeats are not appends: still one
    assert len(to_c) == 1
    net.drop = None
    net.run_until(lambda: net["c"].last_index == net["a"].last_index)
    assert pr.state is ProgressState.REPLICATE


def test_replicate_state_caps_inflight_appends() -> None:
    conf = cfg(pre_vote=False, check_quorum=False, max_inflight_msgs=4, max_entries_per_msg=1)
    net = Net(IDS3, seed=11, config=conf)
    net.elect("a")
    pr = net["a"].progress("b")
    assert pr is not None and pr.state is ProgressState.REPLICATE
    net.cut.add(("b", "a"))  # b receives but its acks are lost
    before = len(net.delivered)
    for k in range(20):
        net.propose("a", bytes([k]))
    sent = [
        m
        for m in net.delivered[before:]
        if isinstance(m, AppendEntries) and m.dst == "b" and m.entries
    ]
    assert len(sent) == 4 and pr.inflights.full()
    net.heal()
    net.advance(conf.heartbeat_interval)  # a heartbeat answer frees a slot; acks drain the rest
    net.run_until(lambda: net["b"].last_index == net["a"].last_index)
    assert net.applied_data("b") == [bytes([k]) for k in range(20)]


def test_messages_respect_max_entries_and_max_bytes() -> None:
    conf = cfg(pre_vote=False, check_quorum=False, max_entries_per_msg=3, max_bytes_per_msg=2000)
    net = Net(IDS3, seed=12, config=conf)
    net.elect("a")
    net.isolate("c")
    for _ in range(10):
        net.propose("a", b"x" * 500)
    net.heal()
    before = len(net.delivered)
    net.run_until(lambda: net["c"].last_index == net["a"].last_index)
    appends = [m for m in net.delivered[before:] if isinstance(m, AppendEntries) and m.entries]
    assert appends
    assert all(len(m.entries) <= 3 for m in appends)
    assert all(sum(len(e.data) for e in m.entries) <= 2000 for m in appends)


def test_single_oversized_entry_still_goes_out_alone() -> None:
    conf = cfg(pre_vote=False, check_quorum=False, max_bytes_per_msg=100)
    net = Net(IDS3, seed=13, config=conf)
    net.elect("a")
    net.propose("a", b"y" * 1000)
    assert net.applied_data("b") == [b"y" * 1000]


def test_follower_rejects_an_append_whose_previous_entry_does_not_match() -> None:
    storages = {"f": preload([1, 1])}
    net = Net(["f", "g", "h"], seed=14, config=PLAIN, storages=storages)
    net["f"].step(AppendEntries("g", "f", 2, 2, 2, (), 0), 0)
    (resp,) = net["f"].ready().messages
    assert isinstance(resp, AppendResponse) and resp.reject and resp.index == 2
    assert net["f"].role is Role.FOLLOWER and net["f"].leader_id == "g"
