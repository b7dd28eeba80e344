"""Raft §7 log compaction: snapshots, InstallSnapshot, catching up from a snapshot, restart."""

from __future__ import annotations

import random

import pytest

from consensus.errors import LocalProtocolError
from consensus.messages import (
    AppendEntries,
    AppendResponse,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    Heartbeat,
    InstallSnapshot,
    Snapshot,
    SnapshotMeta,
)
from consensus.raft import ConfChanged, RaftNode, Role
from consensus.raft_progress import ProgressState
from consensus.raft_snapshot import SnapshotReceiver, snapshot_chunk
from consensus.storage import MemoryStorage
from tests.consensus.raft_net import Net, cfg

IDS3 = ["a", "b", "c"]
PLAIN = cfg(pre_vote=False, check_quorum=False)


def _propose_many(net: Net, lead: str, n: int, tag: str = "v") -> None:
    for k in range(n):
        net[lead].propose(f"{tag}{k}".encode(), net.now)
        if k % 16 == 15:
            net.deliver()
    net.deliver()


def test_follower_far_behind_catches_up_from_the_leaders_snapshot() -> None:
    net = Net(IDS3, seed=1, config=PLAIN)
    net.elect("a")
    net.isolate("c")
    _propose_many(net, "a", 200)
    for i in ("a", "b"):
        net.compact(i)
    assert net.storages["a"].first_index() > 100  # what c lacks is gone from the leader's log
    net.heal()
    net.advance(net.config.heartbeat_interval * 3)
    assert net.snapshots_installed["c"] == 1
    assert net.applied_data("c") == net.applied_data("a")
    assert net["c"].applied_index == net["a"].applied_index
    assert net.storages["c"].first_index() > 100  # c's log starts after the snapshot
    assert net["a"].progress("c").state is ProgressState.REPLICATE
    # ... and it keeps up from the log afterwards.
    idx = net.propose("a", b"after")
    net.advance(net.config.heartbeat_interval)
    assert net["c"].applied_index == idx and net.applied_data("c")[-1] == b"after"
    net.check_log_matching()


def test_follower_catches_up_from_the_log_when_the_leader_kept_enough_entries() -> None:
    net = Net(IDS3, seed=2, config=PLAIN)
    net.elect("a")
    net.isolate("c")
    _propose_many(net, "a", 40)
    net.compact("a", keep=60)  # keeps every entry c lacks
    net.heal()
    net.advance(net.config.heartbeat_interval * 3)
    assert net.snapshots_installed["c"] == 0
    assert net.applied_data("c") == net.applied_data("a")


def test_snapshot_travels_with_the_membership() -> None:
    net = Net(IDS3, seed=3, config=PLAIN)
    net.elect("a")
    _propose_many(net, "a", 30)
    net.compact("a")
    net.add_node("d")
    net["a"].propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, "d"), net.now)
    net.advance(net.config.heartbeat_interval * 3)
    assert net.snapshots_installed["d"] == 1
    assert net["d"].conf_state == net["a"].conf_state == ConfState(("a", "b", "c"), ("d",))
    assert net.applied_data("d") == net.applied_data("a")
    changed = [ev for node, ev in net.events if node == "d" and isinstance(ev, ConfChanged)]
    assert changed and changed[-1].conf == ConfState(("a", "b", "c"), ("d",))


def test_a_lost_snapshot_is_sent_again() -> None:
    net = Net(IDS3, seed=4, config=PLAIN)
    net.elect("a")
    net.isolate("c")
    _propose_many(net, "a", 50)
    net.compact("a")
    net.heal()
    lost: list[InstallSnapshot] = []

    def drop_first_snapshot(m: object) -> bool:
        if isinstance(m, InstallSnapshot) and not lost:
            lost.append(m)
            return True
        return False

    net.drop = drop_first_snapshot
    net.advance(net.config.heartbeat_interval)
    assert lost and net["a"].progress("c").state is ProgressState.SNAPSHOT
    assert net.snapshots_installed["c"] == 0
    net.run_until(lambda: net.snapshots_installed["c"] == 1, limit=net.config.election_timeout_max)
    net.advance(net.config.heartbeat_interval * 2)
    assert net.applied_data("c") == net.applied_data("a")


def test_restarted_node_resumes_from_its_snapshot_and_log() -> None:
    net = Net(IDS3, seed=5, config=PLAIN)
    net.elect("a")
    _propose_many(net, "a", 30)
    net.compact("b", keep=5)
    _propose_many(net, "a", 10, tag="w")
    net.crash("b")
    net.restart("b")
    assert net["b"].applied_index == net.storages["b"].snapshot().meta.index
    net.advance(net.config.heartbeat_interval * 2)
    assert net.applied_data("b") == net.applied_data("a")
    assert net["b"].conf_state == ConfState(("a", "b", "c"))


def test_node_refuses_an_applied_index_below_the_compacted_log() -> None:
    st = MemoryStorage()
    st.append([Entry(i, 1) for i in range(1, 6)])
    st.create_snapshot(4, ConfState(("a",)), b"s")
    st.compact(4)
    with pytest.raises(LocalProtocolError, match="snapshot"):
        RaftNode("a", ["a"], st, cfg(), random.Random(0), applied=0)
    node = RaftNode("a", ["a"], st, cfg(), random.Random(0), applied=4)
    assert (node.first_index, node.applied_index, node.term_at(4)) == (5, 4, 1)


def _follower(entries: int = 0, commit: int = 0) -> tuple[RaftNode, MemoryStorage]:
    st = MemoryStorage()
    st.append([Entry(i, 1, data=b"%d" % i) for i in range(1, entries + 1)])
    node = RaftNode("b", IDS3, st, PLAIN, random.Random(0))
    if commit:
        node.step(Heartbeat("a", "b", 1, commit), 0)
        rd = node.ready()
        node.advance(rd)
    return node, st


def _snap(index: int, term: int = 1, voters: tuple[str, ...] = ("a", "b", "c")) -> Snapshot:
    return Snapshot(SnapshotMeta(index, term, ConfState(voters)), b"state@%d" % index)


def test_follower_installs_a_snapshot_through_its_ready() -> None:
    node, st = _follower(entries=3, commit=2)
    node.step(InstallSnapshot("a", "b", 2, _snap(10, term=2)), 0)
    rd = node.ready()
    assert rd.snapshot is not None and rd.snapshot.meta.index == 10
    assert rd.committed == []  # the snapshot replaces entries up to 10: nothing to apply
    assert rd.hard_state is not None and rd.hard_state.commit == 10
    (resp,) = rd.messages
    assert isinstance(resp, AppendResponse) and resp.index == 10 and not resp.reject
    st.apply_snapshot(rd.snapshot)
    st.set_hard_state(rd.hard_state)
    node.advance(rd)
    assert (node.applied_index, node.commit_index, node.last_index) == (10, 10, 10)
    assert (st.first_index(), st.last_index(), st.term(10)) == (11, 10, 2)
    # The log continues after the snapshot.
    node.step(AppendEntries("a", "b", 2, 10, 2, (Entry(11, 2, data=b"x"),), 11), 0)
    rd = node.ready()
    assert [e.index for e in rd.committed] == [11]
    node.advance(rd)


def test_entries_after_a_snapshot_in_the_same_ready_follow_it() -> None:
    node, _ = _follower()
    node.step(InstallSnapshot("a", "b", 1, _snap(5)), 0)
    node.step(AppendEntries("a", "b", 1, 5, 1, (Entry(6, 1), Entry(7, 1)), 7), 0)
    rd = node.ready()
    assert rd.snapshot is not None and rd.snapshot.meta.index == 5
    assert [e.index for e in rd.entries] == [6, 7]
    assert [e.index for e in rd.committed] == [6, 7]
    node.advance(rd)
    assert node.applied_index == 7


def test_snapshot_older_than_the_commit_index_is_ignored() -> None:
    node, _ = _follower(entries=8, commit=8)
    node.step(InstallSnapshot("a", "b", 1, _snap(5)), 0)
    rd = node.ready()
    assert rd.snapshot is None
    (resp,) = rd.messages
    assert isinstance(resp, AppendResponse) and resp.index == 8


def test_snapshot_covered_by_the_log_only_moves_the_commit_index() -> None:
    node, _ = _follower(entries=8, commit=2)
    node.step(InstallSnapshot("a", "b", 1, _snap(6)), 0)
    rd = node.ready()
    assert rd.snapshot is None
    assert [e.index for e in rd.committed] == [3, 4, 5, 6]
    assert node.last_index == 8  # the entries after the snapshot are kept


def test_snapshot_with_a_conflicting_term_replaces_the_log() -> None:
    node, _ = _follower(entries=8, commit=2)
    node.step(InstallSnapshot("a", "b", 3, _snap(6, term=3)), 0)
    rd = node.ready()
    assert rd.snapshot is not None
    assert node.last_index == 6 and node.term_at(6) == 3


def test_snapshot_membership_takes_effect_when_advanced() -> None:
    node, st = _follower()
    node.step(InstallSnapshot("a", "b", 1, _snap(5, voters=("a", "c"))), 0)
    rd = node.ready()
    assert node.voters == ("a", "b", "c")
    st.apply_snapshot(rd.snapshot)  # type: ignore[arg-type]
    node.advance(rd)
    assert node.voters == ("a", "c")
    assert node.next_deadline() is None  # no longer a voter: never campaigns
    assert any(isinstance(e, ConfChanged) and e.change is None for e in node.ready().events)


def test_leader_sends_a_snapshot_only_when_the_entries_are_gone() -> None:
    net = Net(IDS3, seed=6, config=PLAIN)
    net.elect("a")
    net.isolate("c")
    _propose_many(net, "a", 20)
    net.compact("a", keep=5)
    net.heal()
    snaps: list[InstallSnapshot] = []
    net.rewrite = lambda m: (snaps.append(m) if isinstance(m, InstallSnapshot) else None) or m
    net.advance(net.config.heartbeat_interval * 3)
    assert len(snaps) == 1
    assert snaps[0].snapshot == net.storages["a"].snapshot()
    assert net["c"].role is Role.FOLLOWER and net.applied_data("c") == net.applied_data("a")


# --- snapshots in chunks ------------------------------------------------------------------------

SMALL_MSGS = cfg(pre_vote=False, check_quorum=False, max_bytes_per_msg=512)


def _behind_by_a_big_snapshot(seed: int) -> tuple[Net, list[InstallSnapshot]]:
    net = Net(IDS3, seed=seed, config=SMALL_MSGS)
    net.elect("a")
    net.isolate("c")
    _propose_many(net, "a", 300)
    net.compact("a")
    net.heal()
    sent: list[InstallSnapshot] = []
    net.rewrite = lambda m: (sent.append(m) if isinstance(m, InstallSnapshot) else None) or m
    return net, sent


def test_a_snapshot_larger_than_a_message_goes_in_chunks() -> None:
    net, sent = _behind_by_a_big_snapshot(seed=20)
    size = len(net.storages["a"].snapshot().data)
    assert size > 4 * 512
    net.advance(net.config.heartbeat_interval * 3)
    assert net.snapshots_installed["c"] == 1
    assert net.storages["c"].snapshot() == net.storages["a"].snapshot()
    assert [m.offset for m in sent] == list(range(0, size, 512))
    assert all(len(m.snapshot.data) <= 512 for m in sent)
    assert [m.done for m in sent] == [False] * (len(sent) - 1) + [True]
    assert net.applied_data("c") == net.applied_data("a")


def test_a_lost_chunk_is_sent_again_and_the_transfer_completes() -> None:
    net, sent = _behind_by_a_big_snapshot(seed=21)
    lost: list[InstallSnapshot] = []

    def lose_the_third_chunk(m: object) -> bool:
        if isinstance(m, InstallSnapshot) and m.offset == 1024 and not lost:
            lost.append(m)
            return True
        return False

    net.drop = lose_the_third_chunk
    net.run_until(lambda: net.snapshots_installed["c"] == 1, limit=net.config.election_timeout_max)
    # The lost chunk never reached the net's rewriter; it was delivered when sent again.
    assert lost and sum(1 for m in sent if m.offset == 1024) == 1
    assert net.applied_data("c")[:300] == net.applied_data("a")[:300]


def test_chunks_out_of_order_ask_for_what_is_missing() -> None:
    snap = Snapshot(SnapshotMeta(9, 2, ConfState(("a", "b"))), bytes(range(250)))
    chunks = [snapshot_chunk("a", "b", 3, snap, off, 100) for off in (0, 100, 200)]
    assert [c.done for c in chunks] == [False, False, True]
    rx = SnapshotReceiver()
    assert rx.receive(chunks[0]) == 100
    assert rx.receive(chunks[2]) == 100  # a gap: ask again from 100
    assert rx.receive(chunks[0]) == 100  # a chunk at 0 starts over
    assert rx.receive(chunks[1]) == 200
    assert rx.receive(chunks[1]) == 200  # a duplicate is not taken twice
    assert rx.receive(chunks[2]) == snap
    # A chunk from another leader or term does not continue someone else's snapshot.
    rx.receive(chunks[0])
    other = snapshot_chunk("c", "b", 4, snap, 100, 100)
    assert rx.receive(other) == 0
    empty = Snapshot(SnapshotMeta(1, 1, ConfState(("a",))), b"")
    only = snapshot_chunk("a", "b", 1, empty, 0, 100)
    assert only.done and SnapshotReceiver().receive(only) == empty
