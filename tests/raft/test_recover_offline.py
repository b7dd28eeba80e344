"""``moltmesh raft recover`` rewrites a data directory in a crash-safe order: stopped at any
step (as a crash would stop it), the directory still opens as a node holding every write, and
run to the end it holds one snapshot with the new voters, the hard state and one segment."""

from __future__ import annotations

from pathlib import Path

import pytest

from consensus.kv import KvStore
from consensus.kv_types import Put, encode_command
from consensus.messages import Entry, EntryKind, HardState
from consensus.raft_membership import make_conf_state
from moltmesh.cli_raft import recover
from moltmesh.raft import wal
from moltmesh.raft.wal import DiskStorage


class Crash(Exception):
    """Stands for the process dying at this point (every earlier step was fsynced)."""


def _puts(lo: int, hi: int, term: int = 2) -> list[Entry]:
    return [
        Entry(i, term, EntryKind.NORMAL, encode_command(Put(f"k{i}", b"v"))) for i in range(lo, hi)
    ]


def _old_group(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A voter's log over several segments, with a snapshot at 10 and a vote in term 3."""
    monkeypatch.setattr(wal, "SEGMENT_BYTES", 200)
    s = DiskStorage.open(root)
    for lo in range(1, 31, 5):
        s.save(HardState(3, "b", lo + 4), _puts(lo, lo + 5))
    kv = KvStore()
    for e in s.entries(1, 11):
        kv.apply_entry(e)
    s.save_snapshot(10, make_conf_state(["b", "c", "d"]), kv.snapshot())
    s.close()
    assert len(list((root / "wal").glob("seg-*.log"))) > 2


def _kv_of(s: DiskStorage) -> KvStore:
    kv = KvStore.restore(s.snapshot().data)
    for e in s.entries(kv.applied_index + 1, s.last_index() + 1):
        kv.apply_entry(e)
    return kv


def test_recover_leaves_one_snapshot_with_the_new_voters(tmp_path, monkeypatch):
    _old_group(tmp_path, monkeypatch)
    assert recover(tmp_path, ["a"]) == (30, 3)
    s = DiskStorage.open(tmp_path)
    assert s.snapshot().meta.index == s.last_index() == 30
    assert s.snapshot().meta.conf_state.voters == ("a",)
    assert s.hard_state == HardState(3, None, 30)
    assert sorted(k.key for k in _kv_of(s).items()) == sorted(f"k{i}" for i in range(1, 31))
    assert len(list((tmp_path / "wal").glob("seg-*.log"))) == 1
    assert len(list((tmp_path / "snap").glob("snap-*.snap"))) == 1


@pytest.mark.parametrize("stop_at", ["save", "unlink"])
def test_a_crash_during_recover_leaves_a_node_that_holds_every_write(
    tmp_path, monkeypatch, stop_at
):
    _old_group(tmp_path, monkeypatch)
    if stop_at == "save":  # the snapshot is written, the hard state not yet
        monkeypatch.setattr(DiskStorage, "save", lambda *a, **k: (_ for _ in ()).throw(Crash()))
    else:  # the first older segment is gone, the others not yet
        real_unlink = Path.unlink
        calls = []

        def unlink_once(path: Path, missing_ok: bool = False) -> None:
            if path.parent.name == "wal":
                calls.append(path)
                if len(calls) > 1:
                    raise Crash
            real_unlink(path, missing_ok=missing_ok)

        monkeypatch.setattr(Path, "unlink", unlink_once)
    with pytest.raises(Crash):
        recover(tmp_path, ["a"])
    monkeypatch.undo()
    s = DiskStorage.open(tmp_path)
    assert s.snapshot().meta.conf_state.voters == ("a",)
    assert s.last_index() == 30
    assert sorted(k.key for k in _kv_of(s).items()) == sorted(f"k{i}" for i in range(1, 31))
    # the vote of term 3 is kept until the new hard state is durable
    assert s.hard_state.term == 3
    assert s.hard_state.vote == ("b" if stop_at == "save" else None)
    s.close()
    assert recover(tmp_path, ["a"]) == (30, 3)  # and running it again finishes the job
