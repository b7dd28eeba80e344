"""One process at a time per data directory: an exclusive lock on ``<data-dir>/lock``.

Two processes on one data directory would run one node id twice: both append to the same Raft
log, overwrite each other's ``api-url``, and an offline ``moltmesh raft recover`` would rewrite
the log under a running node. A node holds the lock from ``Node.start`` to the end of
``Node.stop``; the offline commands that change a data directory hold it while they run.

``fcntl.flock`` on an open file: the kernel releases it when its holder exits in any way
(``kill -9`` included), so a stale lock never blocks a restart, and two ``Node`` objects in one
process conflict like two processes (each opens the file anew). The file holds the holder's pid
and purpose, read only to word the refusal. POSIX only (``fcntl``), like the rest of the node.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from moltmesh.identity import ensure_data_dir

LOCK_FILE = "lock"


class DataDirBusy(RuntimeError):
    """Another process (or another node in this one) holds the data directory."""


class DataDirLock:
    """The exclusive lock of one data directory; ``acquire`` never waits.

    Not thread-safe; one object per holder. ``release`` is idempotent.
    """

    def __init__(self, data_dir: Path, purpose: str) -> None:
        self.data_dir = data_dir
        self.purpose = purpose
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock (creating the directory, 0700, if needed) or raise ``DataDirBusy``
        naming the holder."""
        if self._fd is not None:
            return
        path = ensure_data_dir(self.data_dir) / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise DataDirBusy(
                f"data directory {self.data_dir} is in use{holder}: stop it first, or give "
                "another --data-dir"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {self.purpose}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Give the lock back (the file stays: removing it would race a new holder)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the last descriptor of the open file releases the flock

    def __enter__(self) -> DataDirLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    """`` by <purpose> (pid N)`` from the lock file, or "" when it says nothing usable."""
    try:
        text = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    except OSError:
        return ""
    pid, _, purpose = text.partition(" ")
    if not pid.isdigit():
        return ""
    return f" by {purpose or 'a process'} (pid {pid})"
