"""How much log a snapshot leaves in memory for followers slightly behind: at most
``KEEP_MAX`` entries and a quarter of the log, and no more once their data passes
``KEEP_BYTES`` — an entry may be a batch of hundreds of writes."""

from __future__ import annotations

from consensus.messages import Entry
from moltmesh.raft import compaction
from moltmesh.raft.compaction import Compactor
from moltmesh.raft.wal import DiskStorage


def storage_with(tmp_path, sizes: list[int]) -> DiskStorage:
    storage = DiskStorage.open(tmp_path / "log", fsync=False)
    storage.save(None, [Entry(index=i, term=1, data=b"x" * n) for i, n in enumerate(sizes, 1)])
    return storage


def test_small_entries_keep_the_entry_limit(tmp_path) -> None:
    storage = storage_with(tmp_path, [100] * 8000)
    assert Compactor(storage, 10, lambda: None)._keep_before(8000) == compaction.KEEP_MAX
    assert Compactor(storage, 10, lambda: None)._keep_before(400) == 100  # a quarter
    storage.close()


def test_big_batch_entries_keep_about_keep_bytes(tmp_path) -> None:
    storage = storage_with(tmp_path, [64 * 1024] * 200)  # 200 batch entries of 64 KiB
    keep = Compactor(storage, 10, lambda: None)._keep_before(200)
    assert keep == compaction.KEEP_BYTES // (64 * 1024) + 1  # the one that passes it, no more
    storage.close()
