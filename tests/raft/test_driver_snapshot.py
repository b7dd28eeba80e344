"""The driver restores an installed snapshot before persisting it (issue 8): one that does not
restore is refused, counted and never written, and the driver keeps its state and runs on.
A proposal whose index is proposed again fails at once rather than waiting forever."""

from __future__ import annotations

import asyncio

import pytest

from consensus.kv import KvStore
from consensus.kv_types import Put, encode_command
from consensus.messages import ConfState, Snapshot, SnapshotMeta
from consensus.raft import RaftConfig
from consensus.raft_snapshot import seal, snapshot_chunk
from moltmesh.raft.driver import OutcomeUnknown, RaftDriver, Unavailable, _Proposal
from moltmesh.raft.wal import DiskStorage


def driver(tmp_path) -> RaftDriver:  # type: ignore[no-untyped-def]
    storage = DiskStorage.open(tmp_path / "raft", fsync=False)
    return RaftDriver("b", storage, RaftConfig.local(), lambda dst, msgs: None, seed=1)


def install(d: RaftDriver, data: bytes, index: int = 40) -> None:
    """The leader ``a`` sends ``data`` as a snapshot at ``index`` in one chunk; ``d`` handles
    the Ready that follows."""
    snap = Snapshot(SnapshotMeta(index, 3, ConfState(("a", "b", "c"))), data)
    d.step([snapshot_chunk("a", "b", 3, snap, 0, 1 << 20)])
    while d.node.has_ready():
        d._handle_ready(d.node.ready())


def test_a_sealed_snapshot_that_does_not_restore_is_refused_and_never_persisted(tmp_path) -> None:
    d = driver(tmp_path)
    install(d, seal(b"sealed and intact, but not a KV snapshot"))
    assert d.stats.snapshots_refused == 1
    assert not d.storage.has_snapshot() and d.kv.applied_index == 0
    assert d.node.commit_index == 0 and d.node.snapshot_receiver.require_sealed
    # the leader sends a good one next: it is restored and persisted
    good = KvStore()
    for i in range(1, 41):
        good.apply(i, encode_command(Put("k", b"v%d" % i)))
    install(d, good.snapshot())
    assert d.storage.has_snapshot() and d.storage.snapshot_index() == 40
    kv = d.kv.get("k")
    assert kv is not None and kv.value == b"v40"
    assert d.stats.snapshots_refused == 1


def test_an_unsealed_snapshot_is_refused_by_the_receiver(tmp_path) -> None:
    d = driver(tmp_path)
    install(d, b"x" * 64)  # KV snapshots are always sealed: unchecked bytes are not installed
    assert d.node.snapshot_receiver.refused == 1
    assert not d.storage.has_snapshot()


async def test_a_proposal_replaced_at_its_index_fails_instead_of_waiting_forever(tmp_path) -> None:
    """Leadership lost and won back with the log cut back: a new proposal lands at the index
    of one still waiting. The old one can never commit there: it fails (503), and a deadline
    of either never touches the other."""
    d = driver(tmp_path)
    loop = asyncio.get_running_loop()
    old = _Proposal(2, loop.create_future(), "entry 7")
    d._track(7, [old])
    d._deadlines.add(loop.time() + 0.01, old)
    new = _Proposal(4, loop.create_future(), "entry 7")
    d._track(7, [new])
    d._deadlines.add(loop.time() + 60, new)
    with pytest.raises(Unavailable):
        await old.future  # failed when its index was proposed again
    await asyncio.sleep(0.02)
    d._expire_proposals()  # the old deadline passed: it does not touch the new proposal
    assert not new.future.done() and d._proposals[7] == [new]
    d._deadlines.clear()
    d._deadlines.add(loop.time() - 1, new)
    d._expire_proposals()  # its own deadline does
    with pytest.raises(OutcomeUnknown):
        await new.future
    d.storage.close()
