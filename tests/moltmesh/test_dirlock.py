"""The data-directory lock: one holder at a time, named in the refusal, gone with its process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from moltmesh.dirlock import DataDirBusy, DataDirLock

HOLDER = """
import sys
from pathlib import Path
from moltmesh.dirlock import DataDirLock
lock = DataDirLock(Path(sys.argv[1]), "test holder")
lock.acquire()
print("held", flush=True)
sys.stdin.read()
"""


def test_second_holder_is_refused_with_the_first_named(tmp_path: Path) -> None:
    with DataDirLock(tmp_path / "d", "moltmesh node"), pytest.raises(DataDirBusy) as err:
        DataDirLock(tmp_path / "d", "raft recover").acquire()
    assert f"in use by moltmesh node (pid {os.getpid()})" in str(err.value)
    assert str(tmp_path / "d") in str(err.value)


def test_release_lets_the_next_holder_in_and_is_idempotent(tmp_path: Path) -> None:
    first = DataDirLock(tmp_path, "a")
    first.acquire()
    first.release()
    first.release()
    assert not first.held
    with DataDirLock(tmp_path, "b") as second:
        assert second.held


def test_creates_the_directory_private(tmp_path: Path) -> None:
    with DataDirLock(tmp_path / "new" / "dir", "node"):
        pass
    assert (tmp_path / "new" / "dir").stat().st_mode & 0o777 == 0o700


def test_a_killed_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
    )  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"held\n"
        with pytest.raises(DataDirBusy, match=rf"by test holder \(pid {proc.pid}\)"):
            DataDirLock(tmp_path, "me").acquire()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with DataDirLock(tmp_path, "me"):  # the kernel released it with the process
        pass
