"""A snapshot in chunks is sent again only when a chunk was lost, never because its round trip
is slow (issue 8: under load a transfer that restarted after a few heartbeats never finished).

The leader tells the two apart by the order of one follower's stream: a heartbeat sent after
the latest chunk carries that chunk's number (``snapshot_mark``), and only answers to such
heartbeats, arriving while the chunk is unacknowledged, count as a loss.
"""

from __future__ import annotations

import random

import pytest

from consensus.messages import HeartbeatResponse, InstallSnapshot, SnapshotProgress
from consensus.raft_leader import SNAPSHOT_RETRY, snapshot_mark
from consensus.raft_progress import ProgressState
from tests.consensus.raft_net import Net, cfg

VALUE = 4096


def lagging(seed: int) -> Net:
    """a leads, c missed 24 entries of 4 KiB that a has compacted (a snapshot in chunks)."""
    config = cfg(pre_vote=False, check_quorum=False, max_bytes_per_msg=16 * 1024)
    net = Net(["a", "b", "c"], seed=seed, config=config)
    net.elect("a")
    net.isolate("c")
    for i in range(24):
        net["a"].propose(bytes([i]) * VALUE, net.now)
        net.deliver()
    net.compact("a")
    net.heal()
    return net


def held_chunks(net: Net) -> list[InstallSnapshot]:
    """From now on, chunks to c are taken off the network (in flight, or lost) into the list."""
    held: list[InstallSnapshot] = []

    def take(m: object) -> bool:
        if isinstance(m, InstallSnapshot) and m.dst == "c":
            held.append(m)
            return True
        return False

    net.drop = take
    return held


def answer(net: Net, context: bytes) -> None:
    """c answers one heartbeat carrying ``context``; what a sends on is delivered."""
    net["a"].step(HeartbeatResponse("c", "a", net["a"].term, context), net.now)
    net.deliver()


def test_answers_to_heartbeats_sent_before_a_chunk_never_restart_it() -> None:
    seed = 11
    net = lagging(seed)
    held = held_chunks(net)
    answer(net, b"")  # c is heard from: a finds its entries compacted, starts the snapshot
    (first,) = held  # on its way, slowly
    assert first.offset == 0 and not first.done, seed
    pr = net["a"].progress("c")
    assert pr is not None and pr.state is ProgressState.SNAPSHOT
    for _ in range(20):  # a slow round trip: earlier heartbeats keep being answered
        answer(net, b"")
        answer(net, snapshot_mark(pr.snapshot_seq - 1))
    assert pr.state is ProgressState.SNAPSHOT and held == [first], seed
    # the chunk's acknowledgement arrives at last: the next chunk follows, nothing restarts
    got = len(first.snapshot.data)
    net["a"].step(SnapshotProgress("c", "a", net["a"].term, first.snapshot.meta.index, got),
                  net.now)  # fmt: skip
    net.deliver()
    assert [m.offset for m in held] == [0, got], seed


def test_a_lost_chunk_is_sent_again_once_later_heartbeats_come_back_without_it() -> None:
    seed = 12
    net = lagging(seed)
    held = held_chunks(net)
    answer(net, b"")
    (first,) = held
    pr = net["a"].progress("c")
    assert pr is not None
    got = len(first.snapshot.data)  # c takes the first chunk; the second one is lost
    net["a"].step(SnapshotProgress("c", "a", net["a"].term, first.snapshot.meta.index, got),
                  net.now)  # fmt: skip
    net.deliver()
    assert [m.offset for m in held] == [0, got], seed
    for _ in range(SNAPSHOT_RETRY - 1):
        answer(net, snapshot_mark(pr.snapshot_seq))
    assert len(held) == 2, seed
    answer(net, snapshot_mark(pr.snapshot_seq))  # heartbeats after it arrived; it did not
    assert [m.offset for m in held] == [0, got, got], seed  # that chunk again, not from 0
    assert pr.state is ProgressState.SNAPSHOT, seed


def test_heartbeats_to_a_follower_receiving_a_snapshot_name_the_latest_chunk() -> None:
    seed = 13
    net = lagging(seed)
    held = held_chunks(net)
    answer(net, b"")
    pr = net["a"].progress("c")
    assert pr is not None and held, seed
    net.delivered.clear()
    net.advance(net.config.heartbeat_interval)
    beats = [m for m in net.delivered if m.dst == "c" and type(m).__name__ == "Heartbeat"]
    assert beats and all(m.context == snapshot_mark(pr.snapshot_seq) for m in beats), seed


@pytest.mark.parametrize("seed", range(4))
def test_a_lagging_follower_catches_up_when_chunks_are_dropped_at_random(seed: int) -> None:
    net = lagging(seed)
    chaos = random.Random(seed)  # 30 % of the chunks and of their answers are lost
    net.drop = lambda m: isinstance(m, InstallSnapshot | SnapshotProgress) and chaos.random() < 0.3
    net.run_until(lambda: net.snapshots_installed["c"] >= 1, limit=5_000_000)
    net.drop = None
    net.run_until(lambda: net["c"].applied_index == net["a"].applied_index)
    assert net.applied_data("c") == net.applied_data("a"), seed
