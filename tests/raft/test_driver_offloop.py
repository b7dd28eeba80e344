"""The driver waits for the disk off its event loop (issue 8, throughput): a write that fsyncs
runs on the WAL thread while the loop keeps taking proposals, which then go out together in the
next Ready; a KV snapshot is encoded and written on a thread of its own while the group keeps
committing, and the log is compacted only once that snapshot is durable."""

from __future__ import annotations

import asyncio
import threading

from consensus.kv import KvStore
from consensus.kv_types import Put, encode_command
from consensus.raft import RaftConfig
from consensus.raft_types import Role
from moltmesh.raft.driver import RaftDriver
from moltmesh.raft.wal import DiskStorage, PendingWrite


class GatedStorage(DiskStorage):
    """A ``DiskStorage`` whose log writes (``write``) or snapshot writes (``write_snapshot``)
    wait for ``gate`` once ``hold_writes`` / ``hold_snapshots`` is set; ``writes`` records the
    entry count of every log write, ``blocked`` is set when a write waits."""

    def __init__(self, *a: object, **kw: object) -> None:
        super().__init__(*a, **kw)  # type: ignore[arg-type]
        self.gate = threading.Event()
        self.blocked = threading.Event()
        self.hold_writes = self.hold_snapshots = False
        self.writes: list[int] = []
        self.write_threads: set[str] = set()

    def write(self, w: PendingWrite) -> None:
        if self.hold_writes and w.entries:
            self.blocked.set()
            self.gate.wait(10)
        self.writes.append(len(w.entries))
        self.write_threads.add(threading.current_thread().name)
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


async def test_proposals_made_while_the_disk_works_go_out_in_one_write(tmp_path) -> None:
    storage = open_gated(tmp_path)
    d = RaftDriver("a", storage, RaftConfig.local(), lambda dst, msgs: None, bootstrap=True,
                   seed=3)  # fmt: skip
    await leading(d)
    try:
        storage.hold_writes = True
        first = asyncio.create_task(d.propose(encode_command(Put("k0", b"v")), 10))
        await wait_thread(storage.blocked)  # its fsync waits on the WAL thread...
        storage.hold_writes = False
        # ...and the loop still runs: 20 more proposals are taken meanwhile
        rest = [asyncio.create_task(d.propose(encode_command(Put(f"k{i}", b"v")), 10))
                for i in range(1, 21)]  # fmt: skip
        await asyncio.sleep(0.05)
        assert not first.done() and d.node.last_index == d.node.commit_index + 21
        before = len(storage.writes)
        storage.gate.set()
        results = await asyncio.gather(first, *rest)
        assert [r.revision for r in results] == sorted(r.revision for r in results)
        # the 20 went to the disk together, in one write (one fsync) after the first
        assert storage.writes[before:][:2] == [1, 20]
        assert any(t.startswith("raft-wal") for t in storage.write_threads)
        assert d.kv.get("k20") is not None
    finally:
        storage.gate.set()
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
