"""A snapshot file that could not be written whole leaves nothing behind (reliability review: 58
failed snapshots on a full disk left 10 MB of ``.tmp`` files that kept the node from starting)."""

from __future__ import annotations

import errno

import pytest

from consensus.messages import ConfState, Entry, Snapshot, SnapshotMeta
from moltmesh.raft import wal
from moltmesh.raft.wal import DiskStorage


def test_a_failed_snapshot_write_removes_its_temporary_file(tmp_path, monkeypatch) -> None:
    storage = DiskStorage.open(tmp_path / "log", fsync=False)
    storage.save(None, [Entry(index=i, term=1, data=b"x" * 100) for i in range(1, 11)])
    real_fsync = wal.os.fsync

    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(wal.os, "fsync", disk_full)
    snap = Snapshot(SnapshotMeta(10, 1, ConfState(voters=("a",))), b"k" * 4096)
    with pytest.raises(OSError, match="No space"):
        storage.write_snapshot(snap)
    monkeypatch.setattr(wal.os, "fsync", real_fsync)
    assert list((tmp_path / "log").rglob("*.tmp")) == []
    storage.write_snapshot(snap)  # the disk has room again: the same snapshot is written
    storage.close()


def test_temporary_snapshot_files_left_by_a_crash_are_removed_at_open(tmp_path) -> None:
    storage = DiskStorage.open(tmp_path / "log", fsync=False)
    storage.save(None, [Entry(index=1, term=1, data=b"x")])
    storage.close()
    snap_dir = next(p for p in (tmp_path / "log").rglob("snap") if p.is_dir())
    leftover = snap_dir / f"snap-{7:020d}.tmp"
    leftover.write_bytes(b"half a snapshot")
    DiskStorage.open(tmp_path / "log", fsync=False).close()
    assert not leftover.exists()
