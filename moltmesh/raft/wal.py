"""Durable Raft storage: segment files with a CRC per record, and snapshot files.

Layout under ``<data_dir>/raft/``::

    wal/seg-<first index, 20 digits>.log    records, appended and fsynced per Ready
    snap/snap-<index, 20 digits>.snap       one snapshot (KV data + Raft meta), CRC-framed

A record is ``[u32 length][u32 crc32(length)][u32 crc32(payload)][payload]``, the payload
msgpack: ``[1, index, term, kind, data]`` (an entry) or ``[2, term, vote, commit]`` (a hard state).
An entry whose index is at or below the last one replaces that suffix (a follower's log
truncation), exactly as ``MemoryStorage.append`` does, so replay is a plain fold.

Preallocation: the last segment is kept zero-filled ``PREALLOCATE_BYTES`` ahead of its records
(written zeros, not a sparse or ``fallocate``d range), so that a write lands in blocks the file
already owns and its ``fdatasync`` flushes data only: no file-size change, no journal commit of
the file system's metadata (``bench/wal_fsync.py`` on this VM's ext4, 3 processes fsyncing at
once: 0.55 → 0.30 ms p50). A segment is truncated to its records, durably, before the next
one is created, so only the last segment ends in zeros.

Recovery (``DiskStorage.open``): every segment is read in order. An all-zero record header
followed by zeros only ends a segment's records (the preallocated tail; a closed segment has
one only if the node ran with fsync off and crashed at a rotation). In the last segment, a
*torn tail* (the write in flight when the process died, never acknowledged: its fsync did not
return) is dropped, the file truncated before it, and the node goes on: a bad record (short
header, damaged length, short payload, payload CRC mismatch) that reaches the end of the
file or holds a ``SECTOR_BYTES`` block of zeros (a block that never reached the disk), or
anything but zeros after an all-zero header (what landed of a write whose first block did
not). Any other bad record, or zeros inside a closed segment, is silent corruption:
``WalCorruptError`` names the file and offset, and the node refuses to start rather than
serve a log it cannot trust. (A range of the last segment zeroed by the disk cannot be told
from a write that did not land: the records after it are dropped, as etcd's WAL does.)

Compaction: ``save_snapshot`` writes the snapshot file (tmp, fsync, rename, fsync dir),
compacts the in-memory log and deletes whole segments that only hold compacted entries, and
older snapshot files. Reads go to an in-memory ``MemoryStorage`` mirror (the ``Storage``
protocol the core reads); the disk is written, never read, after ``open``.
"""

from __future__ import annotations

import logging
import os
import struct
import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import msgpack

from consensus.errors import ConsensusError, SnapshotOutOfDateError, SnapshotUnavailableError
from consensus.messages import (
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Snapshot,
    SnapshotMeta,
)
from consensus.storage import MemoryStorage
from moltmesh.logs import log_event

log = logging.getLogger("moltmesh.raft.wal")

_HEADER = struct.Struct("<III")  # length, crc32(length bytes), crc32(payload)
_REC_ENTRY = 1
_REC_HARD = 2
SEGMENT_BYTES = 8 * 2**20
"""A segment is closed and a new one started once it grows past this size."""
PREALLOCATE_BYTES = 2**20
"""Zeros written ahead of the last segment's records whenever a write reaches its end."""
SECTOR_BYTES = 512
"""The unit a disk writes whole (or not at all) that torn-write detection assumes."""


class WalCorruptError(ConsensusError):
    """The log on disk is damaged somewhere other than its torn tail; ``path``/``offset`` say
    where. The node refuses to start (restore the data directory or `moltmesh raft recover`)."""

    def __init__(self, path: Path, offset: int, reason: str) -> None:
        super().__init__(f"raft log corrupt: {path} at byte {offset}: {reason}")
        self.path = path
        self.offset = offset


def _frame(payload: bytes) -> bytes:
    n = len(payload)
    return _HEADER.pack(n, zlib.crc32(n.to_bytes(4, "little")), zlib.crc32(payload)) + payload


def _newer(a: HardState | None, b: HardState | None) -> HardState | None:
    """The later of two hard states of one node: terms only grow, a vote once cast stands for
    its term, and the commit index only grows."""
    if a is None or b is None:
        return a or b
    if a.term != b.term:
        return a if a.term > b.term else b
    return HardState(a.term, a.vote or b.vote, max(a.commit, b.commit))


def _fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _holds_zero_sector(buf: bytes, start: int, stop: int) -> bool:
    """Whether ``buf[start:stop]``, cut at ``SECTOR_BYTES`` boundaries of the file, has a piece
    of zeros only: a block of a write that never reached the disk (as etcd's WAL tells a torn
    write from corruption)."""
    stop = min(stop, len(buf))
    while start < stop:
        cut = min((start // SECTOR_BYTES + 1) * SECTOR_BYTES, stop)
        if buf.count(0, start, cut) == cut - start:
            return True
        start = cut
    return False


def _read_records(path: Path, last: bool) -> tuple[list[object], int, int]:
    """Decode every record of ``path``; returns (payloads, length of the good prefix, torn
    bytes after it: 0 when only zeros follow). An all-zero header ends a segment's records
    when only zeros follow it. Raises ``WalCorruptError`` unless every bad byte is the last
    segment's torn tail (see the module docstring)."""
    buf = path.read_bytes()
    out: list[object] = []
    pos = 0
    while pos < len(buf):
        head = buf[pos : pos + _HEADER.size]
        if head.count(0) == len(head):  # the preallocated zeros, or a write's lost first block
            if buf.count(0, pos) == len(buf) - pos:
                return out, pos, 0
            if last:
                return out, pos, len(buf[pos:].rstrip(b"\0"))
            raise WalCorruptError(path, pos, "zeros inside a closed segment")
        if len(head) < _HEADER.size:
            reason, end = "short record header", len(buf)
        else:
            n, ncrc, crc = _HEADER.unpack_from(buf, pos)
            end = pos + _HEADER.size + n
            if zlib.crc32(n.to_bytes(4, "little")) != ncrc:
                reason, end = "record length damaged (CRC mismatch)", pos + _HEADER.size
            elif end > len(buf):
                reason = "short record"
            elif zlib.crc32(buf[pos + _HEADER.size : end]) != crc:
                reason = "CRC mismatch"
            else:
                try:
                    out.append(msgpack.unpackb(buf[pos + _HEADER.size : end], use_list=True))
                except Exception as e:
                    raise WalCorruptError(path, pos, f"undecodable record: {e}") from None
                pos = end
                continue
        if last and (end >= len(buf) or _holds_zero_sector(buf, pos, end)):
            return out, pos, len(buf[pos:].rstrip(b"\0"))  # the unacknowledged last write
        raise WalCorruptError(path, pos, reason)
    return out, pos, 0


class PendingWrite:
    """One ``save`` between its steps: the encoded records, where they go (the ``segment``
    opened for writing when prepared, at ``offset``) and how many zeros to preallocate after
    them, whether to fsync them, and what the in-memory log takes once they are written.
    ``fsync_seconds``: how long the fsync took."""

    __slots__ = (
        "blob", "entries", "fsync", "fsync_seconds", "hard_state", "offset", "segment", "zeros"
    )  # fmt: skip

    def __init__(
        self,
        blob: bytes,
        segment: int,
        offset: int,
        zeros: int,
        fsync: bool,
        hard_state: HardState | None,
        entries: Sequence[Entry],
    ) -> None:
        self.blob = blob
        self.segment = segment
        self.offset = offset
        self.zeros = zeros
        self.fsync = fsync
        self.hard_state = hard_state
        self.entries = entries
        self.fsync_seconds: float | None = None


class DiskStorage:
    """A ``Storage`` for the core, persisted under ``root`` (see the module docstring).

    The driver calls, per Ready and in this order: ``apply_snapshot`` (if any), then
    ``save(hard_state, entries)`` which writes and fsyncs one batch. ``save_snapshot`` after
    applying takes a snapshot and compacts. ``fsync_hook(seconds)`` observes each fsync.
    """

    def __init__(self, root: Path, *, fsync: bool = True) -> None:
        self.root = root
        self.fsync = fsync
        self.wal_dir = root / "wal"
        self.snap_dir = root / "snap"
        self.mem = MemoryStorage()
        self.fsync_hook: Callable[[float], None] | None = None
        self.torn_bytes = 0  # bytes dropped from a torn tail at the last open
        self._packer = msgpack.Packer()
        self._fd: int | None = None
        self._seg_size = 0  # bytes of records in the last segment (where the next write goes)
        self._alloc = 0  # bytes of the last segment's file: its records, then zeros
        self._segment_serial = 0  # counts the segments opened for writing (see PendingWrite)
        self._segments: list[tuple[int, Path]] = []  # (first index, path), sorted
        self._roll_retry_at = 0  # a failed roll is tried again once the segment holds this
        self.roll_failures = 0  # segment rolls that failed (the log went on in the old one)

    # --- opening ----------------------------------------------------------------

    @classmethod
    def open(cls, root: Path, *, fsync: bool = True) -> DiskStorage:
        """Load the snapshot and replay the segments under ``root`` (created if absent)."""
        s = cls(root, fsync=fsync)
        s.wal_dir.mkdir(parents=True, exist_ok=True)
        s.snap_dir.mkdir(parents=True, exist_ok=True)
        snap, snap_hs = s._load_snapshot()
        if snap is not None:
            s.mem.apply_snapshot(snap)
        segs = sorted(s.wal_dir.glob("seg-*.log"))
        s._segments = [(int(p.stem[4:]), p) for p in segs]
        hs: HardState | None = None  # the last one the segments hold
        for i, (_, path) in enumerate(s._segments):
            last = i == len(s._segments) - 1
            records, good, torn = _read_records(path, last)
            if torn:
                s.torn_bytes = torn
                with open(path, "r+b") as f:
                    f.truncate(good)
                    os.fsync(f.fileno())
            s._seg_size = good
            for rec in records:
                if not isinstance(rec, list) or not rec:
                    raise WalCorruptError(path, 0, "record is not a list")
                if rec[0] == _REC_ENTRY:
                    _, index, term, kind, data = rec
                    e = Entry(index, term, EntryKind(kind), data)
                    if index > s.mem.last_index() + 1:
                        raise WalCorruptError(path, 0, f"gap before entry {index}")
                    s.mem.append([e])
                elif rec[0] == _REC_HARD:
                    hs = HardState(rec[1], rec[2], rec[3])
        latest = _newer(snap_hs, hs) or HardState()
        s.mem.set_hard_state(latest)
        s._open_tail()
        if snap_hs is not None and latest != hs:  # only the snapshot file holds it: the log
            s.save(latest, [], sync=True)  # must too, before a compaction snapshot replaces it
        return s

    def _load_snapshot(self) -> tuple[Snapshot | None, HardState | None]:
        """The newest snapshot and the hard state stored with it (``apply_snapshot``'s)."""
        for p in self.snap_dir.glob("snap-*.tmp"):
            p.unlink()  # a snapshot whose writing failed or was cut short by a crash
        snaps = sorted(self.snap_dir.glob("snap-*.snap"))
        for p in snaps:
            if p != snaps[-1]:
                p.unlink()  # older snapshots left by a crash during compaction
        if not snaps:
            return None, None
        path = snaps[-1]
        records, good, _ = _read_records(path, last=False)
        if len(records) != 1 or not isinstance(records[0], list) or len(records[0]) not in (5, 8):
            raise WalCorruptError(path, good, "a snapshot file holds one record of 5 or 8 fields")
        index, term, voters, learners, data, *hard = records[0]
        meta = SnapshotMeta(index, term, ConfState(tuple(voters), tuple(learners)))
        return Snapshot(meta, data), (HardState(*hard) if hard else None)

    def _open_tail(self) -> None:
        if not self._segments:
            self._new_segment(self.mem.last_index() + 1)
            return
        path = self._segments[-1][1]
        self._fd = os.open(path, os.O_WRONLY)
        self._alloc = path.stat().st_size  # ``_seg_size``: where ``open`` found the records end

    def _new_segment(self, first: int) -> None:
        """Start the segment holding entries from ``first`` and make it the one written.

        The new file is opened (and the directory's entry for it made durable) before the old
        segment's descriptor is closed: a failing ``os.open`` (no descriptor left: EMFILE,
        ENFILE; ENOSPC; EACCES) raises with the old segment still open and written, and nothing
        new on disk, so the log stays usable (``prepare`` then keeps appending to the old
        segment and tries the roll again later)."""
        if self._fd is not None and self._alloc > self._seg_size:
            # Only the last segment may end in zeros: this one loses its tail durably
            # before the next exists (a crash in between leaves it the last one).
            os.ftruncate(self._fd, self._seg_size)
            if self.fsync:
                os.fsync(self._fd)
            self._alloc = self._seg_size  # (it stays the one written if the roll fails)
        path = self.wal_dir / f"seg-{first:020d}.log"
        dir_fd = os.open(self.wal_dir, os.O_RDONLY) if self.fsync else None  # before creating
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                if dir_fd is not None:
                    os.fsync(dir_fd)
            except BaseException:
                os.close(fd)
                path.unlink(missing_ok=True)
                raise
        finally:
            if dir_fd is not None:
                os.close(dir_fd)
        old, self._fd = self._fd, fd
        self._seg_size = self._alloc = 0
        self._segment_serial += 1
        self._segments.append((first, path))
        if old is not None:
            os.close(old)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    # --- Storage protocol (reads) ----------------------------------------------------------------

    def initial_state(self) -> tuple[HardState, ConfState]:
        return self.mem.initial_state()

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        return self.mem.entries(lo, hi, max_bytes)

    def term(self, index: int) -> int:
        return self.mem.term(index)

    def first_index(self) -> int:
        return self.mem.first_index()

    def last_index(self) -> int:
        return self.mem.last_index()

    def snapshot(self) -> Snapshot:
        return self.mem.snapshot()

    @property
    def hard_state(self) -> HardState:
        return self.mem.hard_state

    def snapshot_index(self) -> int:
        return self.mem.snapshot_index()

    # --- writes ----------------------------------------------------------------

    def save(
        self, hard_state: HardState | None, entries: Sequence[Entry], *, sync: bool = False
    ) -> None:
        """Append ``entries`` (truncating a conflicting suffix) and record ``hard_state``, as one
        write followed by one fsync (when enabled). Returns once durable.

        A write that changes only the commit index is not fsynced (unless ``sync``): the
        commit index is a hint that Raft does not need durably (a restarted node learns it
        again from the leader; every entry it covers is already durable), so applying a
        commit never waits for the disk. It becomes durable with the next fsync, and a crash
        before that only leaves a torn or older commit record, which recovery handles.

        ``save`` is ``prepare``, ``write`` and ``finish`` in a row; a driver that waits for the
        disk off its event loop calls them itself (``write`` on another thread)."""
        w = self.prepare(hard_state, entries, sync=sync)
        if w is not None:
            self.write(w)
            self.finish(w)

    def prepare(
        self, hard_state: HardState | None, entries: Sequence[Entry], *, sync: bool = False
    ) -> PendingWrite | None:
        """The first step of ``save`` (on the caller's thread): encode the records, start a new
        segment when the current one is full; ``None`` when there is nothing to write. One
        prepared write at a time: ``write`` and ``finish`` it before preparing the next, and
        call nothing else that writes (``save_snapshot``, ``apply_snapshot``) in between."""
        if hard_state is None and not entries:
            return None
        old = self.mem.hard_state
        sync = (
            sync
            or bool(entries)
            or (
                hard_state is not None
                and (hard_state.term, hard_state.vote) != (old.term, old.vote)
            )
        )
        # (a follower's truncation reaching below this segment's first entry stays in it:
        # segments replay in the order of their first index, named after it)
        if (
            entries
            and self._seg_size > SEGMENT_BYTES
            and entries[0].index > self._segments[-1][0]
            and self._roll(entries[0].index)
        ):
            hard_state = hard_state or self.mem.hard_state  # each segment restates it
        pack = self._packer.pack  # one Packer: packb would build one per record
        parts = [_frame(pack((_REC_ENTRY, e.index, e.term, e.kind, e.data))) for e in entries]
        if hard_state is not None:
            parts.append(
                _frame(
                    msgpack.packb([_REC_HARD, hard_state.term, hard_state.vote, hard_state.commit])
                )
            )
        blob = b"".join(parts)
        offset = self._seg_size
        self._seg_size += len(blob)
        zeros = 0
        if self._seg_size > self._alloc:  # the write reaches the end: preallocate past it
            zeros = PREALLOCATE_BYTES
            self._alloc = self._seg_size + zeros
        return PendingWrite(
            blob, self._segment_serial, offset, zeros, self.fsync and sync, hard_state, entries
        )

    def _roll(self, first: int) -> bool:
        """Start a new segment at ``first`` when due; False when it could not be created (the
        error logged, the write goes on in the current segment, which a segment may exceed:
        ``SEGMENT_BYTES`` is a target, not a format limit) and another try is made once
        ``PREALLOCATE_BYTES`` more were written."""
        if self._seg_size < self._roll_retry_at:
            return False
        try:
            self._new_segment(first)
        except OSError as e:
            self.roll_failures += 1
            self._roll_retry_at = self._seg_size + PREALLOCATE_BYTES
            log_event(log, "raft.wal_roll_failed", errno=e.errno, error=e.strerror or str(e),
                      segment_bytes=self._seg_size, level=logging.WARNING)  # fmt: skip
            return False
        self._roll_retry_at = 0
        return True

    def write(self, w: PendingWrite) -> None:
        """The second step: write the records and fsync them when needed. Touches only the
        segment file, so it may run on another thread while the caller's thread reads the
        in-memory log."""
        assert self._fd is not None
        assert w.segment == self._segment_serial, "a prepared write outlived its segment"
        if w.zeros:
            written = os.pwritev(self._fd, [w.blob, bytes(w.zeros)], w.offset)
        else:
            written = os.pwrite(self._fd, w.blob, w.offset)
        if written != len(w.blob) + w.zeros:
            raise OSError(f"raft log: short write ({written} of {len(w.blob) + w.zeros} bytes)")
        if w.fsync:
            t0 = time.perf_counter()
            os.fdatasync(self._fd)
            w.fsync_seconds = time.perf_counter() - t0

    def finish(self, w: PendingWrite) -> None:
        """The last step (on the caller's thread, after ``write`` returned): the in-memory log
        and hard state take the written records."""
        if w.fsync_seconds is not None and self.fsync_hook is not None:
            self.fsync_hook(w.fsync_seconds)
        if w.entries:
            self.mem.append(w.entries)
        if w.hard_state is not None:
            self.mem.set_hard_state(w.hard_state)

    def _write_snapshot_file(self, snap: Snapshot, hard_state: HardState | None = None) -> None:
        meta = snap.meta
        rec = [meta.index, meta.term, list(meta.conf_state.voters),
               list(meta.conf_state.learners), snap.data]  # fmt: skip
        if hard_state is not None:
            rec += [hard_state.term, hard_state.vote, hard_state.commit]
        final = self.snap_dir / f"snap-{meta.index:020d}.snap"
        tmp = final.with_suffix(".tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(_frame(msgpack.packb(rec)))
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)  # a full disk must not keep what did fit
            raise
        os.replace(tmp, final)
        _fsync_dir(self.snap_dir)
        for p in self.snap_dir.glob("snap-*.snap"):
            if p != final:
                p.unlink()

    def apply_snapshot(self, snap: Snapshot) -> None:
        """Install the leader's snapshot: the whole log is replaced (new segment after it).
        Raises ``SnapshotOutOfDateError`` (nothing written) unless it is newer than ours."""
        if snap.meta.index <= self.mem.snapshot_index():
            raise SnapshotOutOfDateError(
                f"snapshot at {snap.meta.index} is not newer than ours "
                f"({self.mem.snapshot_index()})"
            )
        # The hard state goes into the snapshot file too: the segments holding it are removed
        # before the new one restates it (a crash in between kept neither, and a node that
        # forgot its vote could vote twice in one term).
        self._write_snapshot_file(snap, self.mem.hard_state)
        self.mem.apply_snapshot(snap)
        for _, path in reversed(self._segments):  # newest first: a crash keeps a gapless prefix
            path.unlink(missing_ok=True)
            if self.fsync:  # (unlinks reach the disk in no promised order otherwise)
                _fsync_dir(self.wal_dir)
        self._segments = []
        self._new_segment(snap.meta.index + 1)
        self.save(self.mem.hard_state, [], sync=True)  # must survive the segments' removal

    def reset_to_snapshot(self, snap: Snapshot, hard_state: HardState) -> None:
        """Offline (``moltmesh raft recover``): make ``snap``, taken at this log's last index
        with whatever membership, the node's whole state, with ``hard_state``; then close.

        The order keeps every crash point recoverable to a valid node: the snapshot file
        replaces any at its index atomically (from then on the node starts from it, with the
        old hard state: keeping a vote is safe); the hard state is appended to the last
        segment, read after the older ones; only then are the older segments removed (every
        entry they hold is in the snapshot)."""
        if snap.meta.index != self.mem.last_index():
            raise ValueError(
                f"snapshot at {snap.meta.index}, the log ends at {self.mem.last_index()}"
            )
        self._write_snapshot_file(snap)
        self.save(hard_state, [], sync=True)
        for _, path in self._segments[:-1]:
            path.unlink(missing_ok=True)
        self._segments = self._segments[-1:]
        if self.fsync:
            _fsync_dir(self.wal_dir)
        self.close()

    def save_snapshot(self, index: int, conf: ConfState, data: bytes, keep: int = 0) -> Snapshot:
        """Snapshot the state machine as of ``index`` and compact the log up to
        ``index - keep`` (lagging followers may still read the ``keep`` entries before it).

        The same as ``write_snapshot`` then ``finish_snapshot``: a driver that writes large
        snapshots off its event loop calls them itself (``write_snapshot`` on another thread,
        the snapshot built with ``SnapshotMeta(index, storage.term(index), conf)``)."""
        snap = Snapshot(SnapshotMeta(index, self.mem.term(index), conf), data)
        self.write_snapshot(snap)
        return self.finish_snapshot(snap, keep)

    def write_snapshot(self, snap: Snapshot) -> None:
        """Write ``snap``'s file durably (tmp, fsync, rename, fsync dir) and remove the older
        ones. Touches only the snapshot directory, so it may run on another thread while the
        log is written; no other snapshot may be written or installed meanwhile."""
        self._write_snapshot_file(snap)

    def finish_snapshot(self, snap: Snapshot, keep: int = 0) -> Snapshot:
        """After ``write_snapshot`` (on the caller's thread, with no write prepared): the
        in-memory log holds ``snap`` and is compacted up to ``index - keep``; segments holding
        only compacted entries are removed. Raises ``SnapshotOutOfDateError`` when a newer
        snapshot is held."""
        index = snap.meta.index
        snap = self.mem.create_snapshot(index, snap.meta.conf_state, snap.data)
        upto = max(index - keep, self.mem.first_index() - 1)
        self.mem.compact(upto)
        # drop segments whose entries all lie at or below ``upto`` (the next one starts after)
        keep_from = 0
        for i in range(len(self._segments) - 1):
            if self._segments[i + 1][0] <= upto + 1:
                keep_from = i + 1
        for _, path in self._segments[:keep_from]:
            path.unlink(missing_ok=True)
        self._segments = self._segments[keep_from:]
        if self._seg_size > SEGMENT_BYTES and self._roll(self.mem.last_index() + 1):
            self.save(self.mem.hard_state, [], sync=True)
        return snap

    def has_snapshot(self) -> bool:
        try:
            self.mem.snapshot()
        except SnapshotUnavailableError:
            return False
        return True
