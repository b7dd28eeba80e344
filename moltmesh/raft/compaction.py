"""Log compaction for the Raft driver: KV snapshots taken without stalling the event loop.

Every ``every`` applied entries or KV commands (a ``Batch`` entry holds several), or
``every_bytes`` of entry data, whichever comes first, the driver asks for a snapshot
(``maybe_start``): a log of large values is compacted by its size, long before its count.
The KV store is captured at once (``KvStore.capture``: its immutable values, no copy of them);
encoding, sealing and writing the file durably (``DiskStorage.write_snapshot``: fsync, rename,
fsync of the directory) run on a thread of their own, so a leader keeps sending heartbeats meanwhile
(a snapshot of a busy store took 270 ms on the loop, enough for the followers to elect
another leader). The in-memory log takes the snapshot and is compacted on the loop thread
(``poll``, between Readies, when no log write is prepared), once the file is durable.

A snapshot that fails (the disk is full) is retried after a back-off that doubles from
``RETRY_FIRST_S`` to ``RETRY_MAX_S``, not at the next Ready: each try encodes the whole store.

One snapshot at a time. Before the driver installs a snapshot from the leader (which replaces
the snapshot files), ``wait`` lets the one being written finish and drops it.
"""

from __future__ import annotations

import concurrent.futures
import gc
import logging
import time
from collections.abc import Callable

from consensus.kv import KvCapture, KvStore
from consensus.messages import ConfState, Snapshot, SnapshotMeta
from moltmesh.logs import log_event
from moltmesh.raft.wal import DiskStorage

log = logging.getLogger("moltmesh.raft")

KEEP_MAX = 1000
"""Entries kept before a snapshot's index (for followers slightly behind), at most ..."""
KEEP_BYTES = 1024 * 1024
"""... and at most about this many bytes of their data (a batch entry may hold 512 KiB)."""
SNAPSHOT_BYTES = 64 * 1024 * 1024
"""Bytes of entry data applied since the last snapshot that make the next one due."""
RETRY_FIRST_S = 1.0
RETRY_MAX_S = 60.0
"""The back-off between snapshot attempts after a failure: doubles from the first to the most."""
SETTLE_GC_COMMANDS = 10_000
"""Applied KV commands between two ``settle_gc`` calls, snapshots or not."""


def settle_gc(*, full: bool) -> None:
    """Exempt the objects alive now from Python's cyclic garbage collector (``gc.freeze``),
    after collecting the garbage cycles of the young generations (of all, when ``full``).

    A full collection walks every tracked object: with the imports of a node and a log and
    KV history of some 10,000 entries that took 130 ms, a stall that, on a leader, let the
    followers' 150-300 ms election timers run out under load. The node calls this once
    started (``full``), then every ``SETTLE_GC_COMMANDS`` applied KV commands and after each log
    compaction (with 50,000 entries between snapshots alone, a leader under load still ran
    full collections of 26 ms, two in 5 s); frozen objects are still freed by
    reference counting when dropped (entries compacted, history trimmed), only cycles among
    them are not (the young generations are collected first, so only older cyclic garbage is
    kept)."""
    gc.collect(2 if full else 1)
    gc.freeze()


class Compactor:
    """Snapshots of ``storage``'s state machine every ``every`` entries or commands (module
    docstring).
    ``on_done`` is called from the writing thread when a snapshot file is written (the driver
    wakes its loop to ``poll``). Without ``start`` (no thread), snapshots are taken in line."""

    def __init__(
        self,
        storage: DiskStorage,
        every: int,
        on_done: Callable[[], None],
        every_bytes: int = SNAPSHOT_BYTES,
    ) -> None:
        self.storage = storage
        self.every = every
        self.every_bytes = every_bytes
        self.taken = 0
        self.failed = 0  # snapshot attempts that failed
        self._retry_after = 0.0  # time.monotonic() before which no snapshot starts (back-off)
        self._backoff = 0.0
        self._counted_to = 0  # entries up to here are in ``_bytes``
        self._bytes = 0  # entry data applied since the last snapshot started
        self._on_done = on_done
        self._exec: concurrent.futures.ThreadPoolExecutor | None = None
        self._job: concurrent.futures.Future[Snapshot] | None = None
        self._keep = 0
        self._settled_at = 0  # applied commands at the last settle_gc
        self._snapshot_at = 0  # applied commands when the last snapshot started
        self.freeze_gc = True
        """``settle_gc`` after each compaction and every ``SETTLE_GC_COMMANDS`` (see there)."""

    def start(self, name: str) -> None:
        if self._exec is None:
            self._exec = concurrent.futures.ThreadPoolExecutor(1, f"raft-snap-{name}")

    @property
    def busy(self) -> bool:
        """A snapshot is being written, or written and not yet taken by the log (``poll``)."""
        return self._job is not None

    def due(self, applied: int, commands: int) -> bool:
        if self._job is not None or (self._backoff and time.monotonic() < self._retry_after):
            return False
        held = max(self.storage.snapshot_index(), self.storage.first_index() - 1)
        return (
            applied - held >= self.every
            or commands - self._snapshot_at >= self.every
            or self._count_bytes(applied) >= self.every_bytes
        )

    def _count_bytes(self, applied: int) -> int:
        """Entry data applied since the last snapshot started (counted as entries apply)."""
        if applied > self._counted_to:
            lo = max(self._counted_to + 1, self.storage.first_index())
            if lo <= applied:
                self._bytes += sum(len(e.data) for e in self.storage.entries(lo, applied + 1))
            self._counted_to = applied
        return self._bytes

    def maybe_start(self, applied: int, conf: ConfState, kv: KvStore, commands: int) -> None:
        """Snapshot ``kv`` (which reflects exactly ``applied``) if one is due and none is
        being written; ``settle_gc`` if due (called after each apply). ``commands``: the KV
        commands applied so far by this process (a running count)."""
        if self.freeze_gc and commands - self._settled_at >= SETTLE_GC_COMMANDS:
            settle_gc(full=False)
            self._settled_at = commands
        if not self.due(applied, commands) or kv.applied_index != applied:
            return
        self._snapshot_at = commands
        self._bytes = 0
        keep = self._keep_before(applied)
        if self._exec is None:
            self.storage.save_snapshot(applied, conf, kv.snapshot(), keep=keep)
            self.taken += 1
            return
        meta = SnapshotMeta(applied, self.storage.term(applied), conf)
        self._keep = keep
        self._job = self._exec.submit(self._write, meta, kv.capture())
        self._job.add_done_callback(lambda _: self._on_done())

    def _keep_before(self, applied: int) -> int:
        """How many entries up to ``applied`` the log keeps once a snapshot at ``applied`` is
        taken: at most ``KEEP_MAX`` and a quarter of the log, and no more once their data
        passes ``KEEP_BYTES``."""
        most = min(KEEP_MAX, applied // 4, applied - self.storage.first_index() + 1)
        if most <= 0:
            return 0
        size = 0
        recent = self.storage.entries(applied - most + 1, applied + 1)
        for kept, e in enumerate(reversed(recent), start=1):
            size += len(e.data)
            if size > KEEP_BYTES:
                return kept
        return most

    def _write(self, meta: SnapshotMeta, capture: KvCapture) -> Snapshot:
        snap = Snapshot(meta, capture.encode())
        self.storage.write_snapshot(snap)
        return snap

    def poll(self) -> None:
        """On the loop thread, with no log write prepared: a snapshot whose file is written is
        taken by the in-memory log, which is compacted."""
        job = self._job
        if job is None or not job.done():
            return
        self._job = None
        try:
            snap = job.result()
        except Exception as e:  # the disk refused: try again after a back-off
            self.failed += 1
            self._backoff = min(RETRY_MAX_S, max(RETRY_FIRST_S, self._backoff * 2))
            self._retry_after = time.monotonic() + self._backoff
            log_event(log, "raft.snapshot_failed", logging.ERROR, error=str(e),
                      retry_in_s=self._backoff, failures=self.failed)  # fmt: skip
            return
        self._backoff = 0.0
        self.storage.finish_snapshot(snap, self._keep)
        self.taken += 1
        if self.freeze_gc:
            settle_gc(full=False)

    def wait(self) -> None:
        """Let a snapshot being written finish, and drop it (the leader's replaces it)."""
        job, self._job = self._job, None
        if job is not None:
            concurrent.futures.wait([job])

    def stop(self) -> None:
        """Wait for a snapshot being written (blocks at most that long), stop the thread."""
        self.wait()
        if self._exec is not None:
            self._exec.shutdown(wait=True)
            self._exec = None
