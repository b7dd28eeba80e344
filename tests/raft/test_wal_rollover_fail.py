"""A segment roll that cannot open its new file (EMFILE, ENOSPC, EACCES) leaves the log usable.

Review9 H2: ``_new_segment`` closed the old segment before opening the new one, so a failing
``os.open`` left ``_fd`` naming a closed descriptor and the Raft driver died. Now the roll opens
first: the error is raised with the old segment still written, ``prepare`` goes on in it, and
nothing written is lost across a restart.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from consensus.messages import Entry, EntryKind, HardState
from moltmesh.raft import wal
from moltmesh.raft.wal import DiskStorage


def _entries(lo: int, hi: int, term: int = 1) -> list[Entry]:
    return [Entry(i, term, EntryKind.NORMAL, f"v{i}".encode()) for i in range(lo, hi)]


def _segments(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "wal").glob("seg-*.log"))


def _fail_opens(monkeypatch: pytest.MonkeyPatch, code: int, times: int, match: str) -> list[str]:
    """Make the next ``times`` calls of ``os.open`` on a path containing ``match`` fail with
    ``code``; returns the list of paths refused."""
    real = os.open
    refused: list[str] = []

    def fake(path, flags, *args, **kwargs):  # type: ignore[no-untyped-def]
        if len(refused) < times and match in str(path):
            refused.append(str(path))
            raise OSError(code, os.strerror(code), str(path))
        return real(path, flags, *args, **kwargs)

    monkeypatch.setattr(wal.os, "open", fake)
    return refused


@pytest.mark.parametrize("code", [errno.EMFILE, errno.ENOSPC, errno.EACCES])
def test_a_failed_new_segment_raises_and_keeps_the_old_one(tmp_path, monkeypatch, code):
    monkeypatch.setattr(wal, "SEGMENT_BYTES", 64)
    s = DiskStorage.open(tmp_path)
    s.save(HardState(1, None, 0), _entries(1, 10))
    before = _segments(tmp_path)
    refused = _fail_opens(monkeypatch, code, 1, "seg-")
    with pytest.raises(OSError) as info:
        s._new_segment(10)
    assert info.value.errno == code and refused
    assert _segments(tmp_path) == before  # nothing new on disk
    monkeypatch.setattr(wal.os, "open", os.open)
    s.save(HardState(1, None, 9), _entries(10, 12))  # the old segment is still written
    assert [e.index for e in s.entries(1, 12)] == list(range(1, 12))
    s.close()
    r = DiskStorage.open(tmp_path)
    assert [e.data for e in r.entries(1, 12)] == [f"v{i}".encode() for i in range(1, 12)]
    assert r.hard_state == HardState(1, None, 9)
    r.close()


def test_a_failed_directory_open_changes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(wal, "SEGMENT_BYTES", 64)
    s = DiskStorage.open(tmp_path)
    s.save(HardState(1, None, 0), _entries(1, 10))
    before = _segments(tmp_path)
    _fail_opens(monkeypatch, errno.EMFILE, 1, str(tmp_path / "wal"))
    with pytest.raises(OSError):
        s._new_segment(10)
    assert _segments(tmp_path) == before
    monkeypatch.setattr(wal.os, "open", os.open)
    s.save(None, _entries(10, 11))
    s.close()
    assert DiskStorage.open(tmp_path).last_index() == 10


def test_saves_go_on_through_failed_rolls_and_roll_later(tmp_path, monkeypatch):
    """The driver's path (``save`` rolls when the segment is full): the write lands in the old
    segment, the roll is retried once ``PREALLOCATE_BYTES`` more were written, and a restart
    reads every entry back from the segments in order."""
    monkeypatch.setattr(wal, "SEGMENT_BYTES", 64)
    monkeypatch.setattr(wal, "PREALLOCATE_BYTES", 256)
    s = DiskStorage.open(tmp_path)
    s.save(HardState(1, None, 0), _entries(1, 5))
    first = _segments(tmp_path)
    refused = _fail_opens(monkeypatch, errno.EMFILE, 1, "seg-")
    s.save(None, _entries(5, 6))  # the roll fails: no error, the entry is in the old segment
    assert refused and s.roll_failures == 1 and _segments(tmp_path) == first
    s.save(None, _entries(6, 7))  # not retried yet (backs off by PREALLOCATE_BYTES)
    assert _segments(tmp_path) == first
    for i in range(7, 40):
        s.save(HardState(1, None, i - 1), _entries(i, i + 1))
    assert len(_segments(tmp_path)) > len(first)  # rolled again once the back-off passed
    assert s.roll_failures == 1
    s.close()
    r = DiskStorage.open(tmp_path)
    assert [e.index for e in r.entries(1, 40)] == list(range(1, 40))
    assert r.hard_state == HardState(1, None, 38)
    r.close()
