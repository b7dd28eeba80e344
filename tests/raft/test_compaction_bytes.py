"""Log compaction by size and after failures (moltmesh.raft.compaction): a log of large values is
snapshotted once its data passes ``every_bytes``, long before ``every`` entries; a snapshot that
fails (a full disk) is retried after a back-off, not at every Ready."""

from __future__ import annotations

import concurrent.futures
import errno

from consensus.kv import KvStore, Put
from consensus.kv_types import encode_command
from consensus.messages import ConfState, Entry
from moltmesh.raft import compaction
from moltmesh.raft.compaction import Compactor
from moltmesh.raft.wal import DiskStorage

CONF = ConfState(voters=("a",))


def log_of(tmp_path, count: int, size: int) -> tuple[DiskStorage, KvStore]:  # type: ignore[no-untyped-def]
    storage = DiskStorage.open(tmp_path / "log", fsync=False)
    entries = [
        Entry(index=i, term=1, data=encode_command(Put(f"k{i % 7}", bytes(size))))
        for i in range(1, count + 1)
    ]
    storage.save(None, entries)
    kv = KvStore()
    for e in entries:
        kv.apply_entry(e)
    return storage, kv


def test_large_entries_make_a_snapshot_due_by_bytes(tmp_path) -> None:
    storage, kv = log_of(tmp_path, 40, 64 * 1024)
    c = Compactor(storage, every=50_000, on_done=lambda: None, every_bytes=1024 * 1024)
    assert not c.due(10, 10)  # 640 KiB so far
    assert c.due(20, 20)  # 1.25 MiB: due although 20 entries is far below every
    c.maybe_start(40, CONF, kv, 40)  # no thread: taken in line
    assert c.taken == 1 and storage.snapshot_index() == 40
    assert not c.due(40, 40)  # the count starts again from the snapshot
    storage.close()


def test_small_entries_wait_for_the_entry_count(tmp_path) -> None:
    storage, _ = log_of(tmp_path, 40, 10)
    c = Compactor(storage, every=30, on_done=lambda: None, every_bytes=1024 * 1024)
    assert not c.due(20, 20) and c.due(30, 30)
    storage.close()


def test_a_failed_snapshot_is_retried_after_a_back_off(tmp_path, monkeypatch) -> None:
    storage, kv = log_of(tmp_path, 40, 100)
    now = [1000.0]
    monkeypatch.setattr(compaction.time, "monotonic", lambda: now[0])

    def disk_full(snapshot) -> None:  # type: ignore[no-untyped-def]
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(storage, "write_snapshot", disk_full)
    c = Compactor(storage, every=10, on_done=lambda: None)
    c.start("t")
    try:
        for expected_wait in (compaction.RETRY_FIRST_S, 2 * compaction.RETRY_FIRST_S):
            c.maybe_start(40, CONF, kv, 40)
            assert c.busy
            concurrent.futures.wait([c._job])  # type: ignore[list-item]
            c.poll()  # the failure is seen on the loop thread
            assert not c.busy and storage.snapshot_index() == 0
            assert not c.due(40, 40), "retried at once"
            now[0] += expected_wait - 0.01
            assert not c.due(40, 40)
            now[0] += 0.02
            assert c.due(40, 40)
        assert c.failed == 2
    finally:
        c.stop()
        storage.close()
