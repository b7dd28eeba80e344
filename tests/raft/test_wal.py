"""The durable log: replay, torn-tail recovery, refusal of corruption, snapshots/compaction."""

from __future__ import annotations

from pathlib import Path

import pytest

from consensus.messages import ConfState, Entry, EntryKind, HardState, Snapshot, SnapshotMeta
from consensus.raft_membership import make_conf_state
from moltmesh.raft import wal
from moltmesh.raft.wal import DiskStorage, WalCorruptError


def _entries(lo: int, hi: int, term: int = 1) -> list[Entry]:
    return [Entry(i, term, EntryKind.NORMAL, f"v{i}".encode()) for i in range(lo, hi)]


def _last_segment(root: Path) -> Path:
    return sorted((root / "wal").glob("seg-*.log"))[-1]


def _records_end(seg: Path) -> int:
    """Where the last segment's records end (its preallocated zeros follow)."""
    return wal._read_records(seg, last=True)[1]


def _records(seg: Path) -> bytes:
    return seg.read_bytes()[: _records_end(seg)]


def _lose_block(seg: Path, at: int, written_from: int) -> None:
    """A crash during the write that began at ``written_from``: the disk block holding byte
    ``at`` never got that write, so what the write put there reads as before (zeros)."""
    lo = at // wal.SECTOR_BYTES * wal.SECTOR_BYTES
    data = bytearray(seg.read_bytes())
    start = max(lo, written_from)
    data[start : lo + wal.SECTOR_BYTES] = bytes(lo + wal.SECTOR_BYTES - start)
    seg.write_bytes(bytes(data))


def test_restart_resumes_from_disk(tmp_path):
    s = DiskStorage.open(tmp_path)
    s.save(HardState(2, "a", 3), _entries(1, 6))
    s.save(None, [Entry(4, 2, EntryKind.NORMAL, b"x")])  # truncates 4..5, like a follower
    s.close()
    r = DiskStorage.open(tmp_path)
    assert r.last_index() == 4
    assert r.entries(1, 5)[-1].data == b"x"
    assert r.hard_state == HardState(2, "a", 3)


def test_torn_tail_is_dropped(tmp_path):
    s = DiskStorage.open(tmp_path)
    s.save(HardState(1, None, 0), _entries(1, 4))
    s.close()
    seg = _last_segment(tmp_path)
    start = _records_end(seg)
    s = DiskStorage.open(tmp_path)
    s.save(None, [Entry(4, 1, EntryKind.NORMAL, b"x" * 1500)])  # spans 3-4 disk blocks
    s.close()
    _lose_block(seg, _records_end(seg) - 1, start)  # its last block never reached the disk
    r = DiskStorage.open(tmp_path)
    assert r.last_index() == 3
    assert 0 < r.torn_bytes < 1500
    r.save(None, _entries(4, 6))  # the log goes on after the truncated tail
    r.close()
    assert DiskStorage.open(tmp_path).last_index() == 5


def test_a_write_cut_at_the_end_of_the_file_is_a_torn_tail_too(tmp_path):
    s = DiskStorage.open(tmp_path)  # as a log written before preallocation ends
    s.save(HardState(1, None, 0), _entries(1, 4))
    s.save(None, _entries(4, 5))
    s.close()
    seg = _last_segment(tmp_path)
    seg.write_bytes(_records(seg)[:-3])
    r = DiskStorage.open(tmp_path)
    assert r.last_index() == 3 and r.torn_bytes > 0


def test_a_damaged_last_record_without_a_lost_block_is_corruption(tmp_path):
    s = DiskStorage.open(tmp_path)
    s.save(HardState(1, None, 0), _entries(1, 4))
    s.save(None, [Entry(4, 1, EntryKind.NORMAL, b"x" * 1500)])
    s.close()
    seg = _last_segment(tmp_path)
    data = bytearray(seg.read_bytes())
    data[_records_end(seg) - 700] ^= 0x01  # one flipped bit, every block written
    seg.write_bytes(bytes(data))
    with pytest.raises(WalCorruptError, match="CRC mismatch"):
        DiskStorage.open(tmp_path)


def test_corruption_in_the_middle_is_refused(tmp_path):
    s = DiskStorage.open(tmp_path)
    s.save(HardState(1, None, 0), _entries(1, 10))
    s.close()
    seg = sorted((tmp_path / "wal").glob("seg-*.log"))[-1]
    data = bytearray(seg.read_bytes())
    data[20] ^= 0xFF  # flip a bit inside the first record
    seg.write_bytes(bytes(data))
    with pytest.raises(WalCorruptError, match="CRC mismatch") as info:
        DiskStorage.open(tmp_path)
    assert info.value.path == seg


def test_snapshot_compacts_and_restores(tmp_path, monkeypatch):
    monkeypatch.setattr(wal, "SEGMENT_BYTES", 64)  # a segment per save
    s = DiskStorage.open(tmp_path)
    for i in range(1, 21):
        s.save(HardState(1, None, i), _entries(i, i + 1))
    before = len(list((tmp_path / "wal").glob("*.log")))
    s.save_snapshot(15, ConfState(("a",), ()), b"state@15", keep=2)
    after = len(list((tmp_path / "wal").glob("*.log")))
    assert after < before
    assert s.first_index() == 14
    s.close()
    r = DiskStorage.open(tmp_path)
    assert r.snapshot().data == b"state@15"
    assert r.snapshot().meta.conf_state.voters == ("a",)
    assert r.first_index() == 16 and r.last_index() == 20  # restart starts after the snapshot
    assert r.hard_state.commit == 20


def test_only_a_commit_change_is_written_without_fsync(tmp_path):
    s = DiskStorage.open(tmp_path)
    synced: list[float] = []
    s.fsync_hook = synced.append
    s.save(HardState(1, "a", 0), _entries(1, 4))  # entries: fsync
    assert len(synced) == 1
    s.save(HardState(1, "a", 3), [])  # the commit moved, nothing else: no fsync
    assert len(synced) == 1
    s.save(HardState(2, None, 3), [])  # a new term (and vote) is a promise: fsync
    assert len(synced) == 2
    s.save(HardState(2, "b", 3), [])
    assert len(synced) == 3
    s.save(HardState(2, "b", 3), [], sync=True)  # forced (snapshot installation)
    assert len(synced) == 4
    s.save(HardState(2, "b", 3), [])
    s.close()
    r = DiskStorage.open(tmp_path)  # written, merely not forced to disk: replay sees it
    assert r.hard_state == HardState(2, "b", 3)
    assert r.last_index() == 3


def test_a_lost_commit_record_only_lowers_the_commit_hint(tmp_path):
    s = DiskStorage.open(tmp_path)
    s.save(HardState(1, "a", 0), _entries(1, 4))
    s.close()
    seg = _last_segment(tmp_path)
    start = _records_end(seg)
    s = DiskStorage.open(tmp_path)
    s.save(HardState(1, "a", 3), [])
    s.close()
    _lose_block(seg, start, start)  # the unsynced commit record never reached the disk
    r = DiskStorage.open(tmp_path)
    assert r.hard_state == HardState(1, "a", 0)  # term and vote survive; commit is relearned
    assert r.last_index() == 3  # every entry was fsynced before it was acknowledged


def test_the_last_segment_is_preallocated_and_resumes_at_its_records_end(tmp_path):
    s = DiskStorage.open(tmp_path)
    s.save(HardState(1, "a", 0), _entries(1, 4))
    s.close()
    seg = _last_segment(tmp_path)
    records = _records(seg)
    assert seg.stat().st_size >= len(records) + wal.PREALLOCATE_BYTES  # zeros written ahead
    r = DiskStorage.open(tmp_path)
    assert r.torn_bytes == 0 and r.last_index() == 3  # the zeros are no torn tail
    r.save(None, _entries(4, 6))  # written right after the records, into the zeros
    r.close()
    assert _records(seg).startswith(records)
    assert DiskStorage.open(tmp_path).entries(1, 6)[-1].data == b"v5"


def test_what_landed_of_a_torn_write_after_the_records_is_dropped(tmp_path):
    s = DiskStorage.open(tmp_path)
    s.save(HardState(1, "a", 0), _entries(1, 4))
    s.close()
    seg = _last_segment(tmp_path)
    end = len(_records(seg))
    with open(seg, "r+b") as f:  # the write's first block stayed zero, a later one landed
        f.seek(end + 600)
        f.write(b"\x17" * 100)
    r = DiskStorage.open(tmp_path)
    assert r.last_index() == 3 and r.torn_bytes > 0
    r.save(None, _entries(4, 5))
    r.close()
    assert DiskStorage.open(tmp_path).last_index() == 4


def test_closed_segments_hold_no_zeros_and_a_zeroed_header_there_is_corruption(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(wal, "SEGMENT_BYTES", 64)  # a segment per save
    s = DiskStorage.open(tmp_path)
    for i in range(1, 6):
        s.save(HardState(1, None, i), _entries(i, i + 1))
    s.close()
    first, *_ = segs = sorted((tmp_path / "wal").glob("seg-*.log"))
    assert all(not p.read_bytes().endswith(b"\0") for p in segs[:-1])  # truncated at rotation
    assert DiskStorage.open(tmp_path).last_index() == 5
    data = bytearray(first.read_bytes())
    data[:12] = bytes(12)  # a zeroed block where a closed segment's first record was
    first.write_bytes(bytes(data))
    with pytest.raises(WalCorruptError, match="zeros inside a closed segment"):
        DiskStorage.open(tmp_path)


def test_a_truncation_below_the_last_segment_stays_in_it(tmp_path, monkeypatch):
    monkeypatch.setattr(wal, "SEGMENT_BYTES", 64)
    s = DiskStorage.open(tmp_path)
    s.save(HardState(1, None, 0), _entries(1, 3))
    s.save(None, _entries(3, 10))  # a new segment from 3, already past SEGMENT_BYTES
    s.save(HardState(2, None, 0), _entries(2, 4, term=2))  # a follower's log cut back to 2
    s.close()
    r = DiskStorage.open(tmp_path)
    assert [e.term for e in r.entries(1, r.last_index() + 1)] == [1, 2, 2]


class _Crash(Exception):
    """Stands for the process dying at this point."""


@pytest.mark.parametrize("at", ["_new_segment", "save"])
def test_a_crash_while_installing_a_snapshot_keeps_the_vote(tmp_path, monkeypatch, at):
    """Installing a leader's snapshot replaces every segment, which held the hard state. A crash
    after they are gone and before the new segment restates it must not forget the term and
    vote: a node that forgot its vote could vote twice in one term."""
    s = DiskStorage.open(tmp_path)
    s.save(HardState(4, "b", 3), _entries(1, 6, term=2))
    snap = Snapshot(SnapshotMeta(50, 3, make_conf_state(["a", "b", "c"])), b"state")
    monkeypatch.setattr(DiskStorage, at, lambda *a, **k: (_ for _ in ()).throw(_Crash()))
    with pytest.raises(_Crash):
        s.apply_snapshot(snap)
    monkeypatch.undo()
    s.close()
    r = DiskStorage.open(tmp_path)
    assert r.hard_state.term == 4 and r.hard_state.vote == "b"
    assert r.snapshot().meta.index == 50
    r.save(HardState(5, None, 50), [])  # a later term, written after, wins over the snapshot's
    r.close()
    assert DiskStorage.open(tmp_path).hard_state == HardState(5, None, 50)


def test_a_crash_while_a_snapshot_install_removes_segments_leaves_no_gap(tmp_path, monkeypatch):
    """The old segments go newest first: whatever a crash keeps of them is a gapless prefix."""
    monkeypatch.setattr(wal, "SEGMENT_BYTES", 64)  # a segment per save
    s = DiskStorage.open(tmp_path)
    for lo in (1, 6, 11):
        s.save(HardState(2, "b", 0), _entries(lo, lo + 5, term=2))
    assert len(list((tmp_path / "wal").glob("seg-*.log"))) == 3
    removed: list[Path] = []
    real_unlink = Path.unlink

    def unlink(path: Path, missing_ok: bool = False) -> None:
        if path.parent.name == "wal" and len(removed) == 2:
            raise _Crash
        removed.append(path)
        real_unlink(path, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", unlink)
    with pytest.raises(_Crash):
        s.apply_snapshot(Snapshot(SnapshotMeta(7, 2, make_conf_state(["a", "b"])), b"state"))
    monkeypatch.undo()
    s.close()
    r = DiskStorage.open(tmp_path)
    assert r.snapshot().meta.index == 7 and r.hard_state.vote == "b"


def test_a_hard_state_found_only_in_the_snapshot_file_is_logged_again(tmp_path, monkeypatch):
    """After a crash mid-install the snapshot file alone holds the term and vote; the next
    compaction snapshot replaces that file, so recovery must have written them to the log."""
    s = DiskStorage.open(tmp_path)
    s.save(HardState(4, "b", 3), _entries(1, 6, term=2))
    conf = make_conf_state(["a", "b", "c"])
    monkeypatch.setattr(
        DiskStorage, "_new_segment", lambda *a, **k: (_ for _ in ()).throw(_Crash())
    )
    with pytest.raises(_Crash):
        s.apply_snapshot(Snapshot(SnapshotMeta(50, 3, conf), b"state"))
    monkeypatch.undo()
    s.close()
    r = DiskStorage.open(tmp_path)
    r.save(None, _entries(51, 61, term=3))
    r.save_snapshot(55, conf, b"later")  # a compaction snapshot, without a hard state
    r.close()
    again = DiskStorage.open(tmp_path)
    assert (again.hard_state.term, again.hard_state.vote) == (4, "b")
    assert again.snapshot().meta.index == 55
