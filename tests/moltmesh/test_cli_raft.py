"""``moltmesh raft recover`` from the command line: it refuses bad voter lists and directories
without Raft state before touching anything, never runs under a node holding the directory,
and warns about voters the log never knew."""

from __future__ import annotations

from pathlib import Path

import pytest

from consensus.kv_types import Put, encode_command
from consensus.messages import Entry, EntryKind
from consensus.raft_membership import ConfChange, ConfChangeType, bootstrap_entries, encode_change
from moltmesh.cli import main
from moltmesh.dirlock import DataDirLock
from moltmesh.raft.wal import DiskStorage

A, B, C = "a" * 16, "b" * 16, "c" * 16


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["raft", "recover", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def a_member(data_dir: Path) -> Path:
    """A data directory whose log founded a group of A and B, added C as a learner and
    holds one write."""
    entries, hs = bootstrap_entries([A, B])
    s = DiskStorage.open(data_dir / "raft", fsync=False)
    learner = encode_change(ConfChange(ConfChangeType.ADD_LEARNER, C))
    more = [
        Entry(3, 1, EntryKind.CONFIG, learner),
        Entry(4, 1, EntryKind.NORMAL, encode_command(Put("k", b"v"))),
    ]
    s.save(hs, entries + more)
    s.close()
    return data_dir


def one_line(err: str) -> str:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize(
    ("voters", "needle"),
    [("", "names no node"), (" , ", "names no node"), (f"{A},nosuch", "'nosuch' is not a node id"),
     ("A" * 16, "is not a node id"), ("a" * 15 + "1", "is not a node id")],
)  # fmt: skip
def test_bad_voter_lists_are_refused_before_anything_changes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], voters: str, needle: str
):
    data = a_member(tmp_path / "d")
    before = sorted(p.name for p in (data / "raft" / "wal").iterdir())
    code, _, err = run(capsys, "--data-dir", str(data), "--voters", voters)
    assert code == 2 and needle in one_line(err) and "--voters" in err
    assert sorted(p.name for p in (data / "raft" / "wal").iterdir()) == before
    assert not (data / "raft" / "snap").exists() or not any((data / "raft" / "snap").iterdir())


@pytest.mark.parametrize("made", ["absent", "empty", "no-raft"])
def test_a_directory_without_raft_state_is_refused_and_nothing_is_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], made: str
):
    data = tmp_path / "nonexist"
    if made != "absent":
        data.mkdir()
    if made == "no-raft":
        (data / "raft").mkdir()
    listing = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    code, _, err = run(capsys, "--data-dir", str(data), "--voters", A)
    assert code == 2 and "holds no Raft state" in one_line(err) and str(data) in err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == listing


def test_recover_refuses_while_the_directory_is_held(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    data = a_member(tmp_path / "d")
    with DataDirLock(data, "moltmesh node"):
        code, out, err = run(capsys, "--data-dir", str(data), "--voters", A)
    assert code == 2 and out == ""
    assert "in use by moltmesh node" in one_line(err) and str(data) in err
    s = DiskStorage.open(data / "raft", fsync=False)
    assert not s.has_snapshot() and s.last_index() == 4  # untouched
    s.close()


def test_recover_writes_the_voters_and_warns_about_strangers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    data = a_member(tmp_path / "d")
    stranger = "z" * 16
    code, out, err = run(capsys, "--data-dir", str(data), "--voters", f"{C}, {A},{stranger}")
    assert code == 0, err
    assert f"voters {A}, {C}, {stranger}" in out and "index 4" in out
    warning = one_line(err)
    assert warning.startswith(f"warning: {stranger} was not in the log's last configuration")
    assert f"voters {A}, {B}; learners {C}" in warning
    s = DiskStorage.open(data / "raft", fsync=False)
    assert s.snapshot().meta.conf_state.voters == (A, C, stranger)
    s.close()
    code, out, err = run(capsys, "--data-dir", str(data), "--voters", A)  # again: no warning
    assert code == 0 and err == "" and "index 4" in out


def test_recover_help_is_plain_text(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit):
        main(["raft", "recover", "--help"])
    out = capsys.readouterr().out
    assert "``" not in out and "`moltmesh status`" in out and "lock" in out
