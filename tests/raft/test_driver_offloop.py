"""What the driver does not make wait on the disk (issue 8, throughput): committed entries it
already holds durably are applied before the next batch's write; a KV snapshot is encoded and
written on a thread of its own while the group keeps committing, and the log is compacted only
once that snapshot is durable."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from consensus.kv import KvStore
from consensus.kv_types import Put, encode_command
from consensus.raft import RaftConfig
from consensus.raft_types import Role
from moltmesh.raft.driver import RaftDriver, now_us
from moltmesh.raft.wal import DiskStorage, PendingWrite


class GatedStorage(DiskStorage):
    """A ``DiskStorage`` whose snapshot writes (``write_snapshot``) wait for ``gate`` once
    ``hold_snapshots`` is set (``blocked`` is set when one waits); ``on_write`` sees every log
    write of entries."""

    def __init__(self, *a: object, **kw: object) -> None:
        super().__init__(*a, **kw)  # type: ignore[arg-type]
        self.gate = threading.Event()
        self.blocked = threading.Event()
        self.hold_snapshots = False
        self.on_write: Callable[[PendingWrite], None] | None = None

    def write(self, w: PendingWrite) -> None:
        if w.entries and self.on_write is not None:
            self.on_write(w)
        super().write(w)

    def write_snapshot(self, snap) -> None:  # type: ignore[no-untyped-def]
        if self.hold_snapshots:
            self.blocked.set()
            self.gate.wait(10)
        super().write_snapshot(snap)


def open_gated(tmp_path, fsync: bool = True) -> GatedStorage:  # type: ignore[no-untyped-def]
    s = GatedStorage(tmp_path / "raft", fsync=fsync)
    s.wal_dir.mkdir(parents=True)
    s.snap_dir.mkdir(parents=True)
    s._open_tail()
    return s


async def leading(d: RaftDriver) -> None:
    """Start ``d`` (a founding sole voter) and wait until it leads."""
    await d.start()
    async with asyncio.timeout(10):
        while d.node.role is not Role.LEADER or d.node.commit_index < d.node.last_index:
            await asyncio.sleep(0.005)


async def wait_thread(event: threading.Event) -> None:
    async with asyncio.timeout(10):
        while not event.is_set():
            await asyncio.sleep(0.002)


async def test_committed_entries_already_durable_apply_before_the_next_write(tmp_path) -> None:
    """A sole voter commits a batch once it is durable; the next Ready carries that commit
    and the next batch: the committed ones are applied (their clients answered) before the
    next batch's write, not after its fsync."""
    storage = open_gated(tmp_path)
    d = RaftDriver("a", storage, RaftConfig.local(), lambda dst, msgs: None, bootstrap=True,
                   seed=3)  # fmt: skip
    await leading(d)
    seen: list[tuple[int, int]] = []  # (first index written, KV applied index at the write)

    def on_write(w: PendingWrite) -> None:
        seen.append((w.entries[0].index, d.kv.applied_index))
        if len(seen) == 1:  # while batch A is written, batch B is proposed
            for i in range(4):
                d.node.propose(encode_command(Put(f"b{i}", b"v")), now_us())

    try:
        storage.on_write = on_write
        await asyncio.gather(*(d.propose(encode_command(Put(f"a{i}", b"v")), 10)
                               for i in range(4)))  # fmt: skip
        async with asyncio.timeout(10):
            while d.kv.get("b3") is None:
                await asyncio.sleep(0.001)
        (a_first, _), (b_first, b_applied) = seen[0], seen[1]
        # B's Ready carried A's commit: A was applied before B's write, not after its fsync
        assert b_first == a_first + 4 and b_applied == b_first - 1, seen
    finally:
        await d.stop()


async def test_a_snapshot_is_written_off_the_loop_and_compacts_once_durable(tmp_path) -> None:
    storage = open_gated(tmp_path, fsync=False)
    d = RaftDriver("a", storage, RaftConfig.local(), lambda dst, msgs: None, bootstrap=True,
                   seed=4, snapshot_entries=10)  # fmt: skip
    await leading(d)
    try:
        storage.hold_snapshots = True
        for i in range(12):
            await d.propose(encode_command(Put(f"k{i}", b"v%d" % i)), 10)
        await wait_thread(storage.blocked)
        assert d.compactor.busy and storage.snapshot_index() == 0
        first = storage.first_index()
        # the group keeps committing while the snapshot is written
        for i in range(12, 30):
            await d.propose(encode_command(Put(f"k{i}", b"v%d" % i)), 10)
        assert storage.snapshot_index() == 0 and storage.first_index() == first
        storage.gate.set()
        async with asyncio.timeout(10):
            while d.compactor.busy:
                await asyncio.sleep(0.005)
        snap = storage.snapshot()
        assert 10 <= snap.meta.index < d.node.applied_index  # taken where it was captured
        restored = KvStore.restore(snap.data)
        assert restored.applied_index == snap.meta.index
        assert restored.get("k29") is None and d.kv.get("k29") is not None
        assert d.compactor.taken == 1 and storage.first_index() > first
    finally:
        storage.gate.set()
        await d.stop()
