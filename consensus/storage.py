"""The storage a Raft core reads, and an in-memory implementation.

etcd style: the *driver* writes to storage (``append``, ``set_hard_state``) when it handles a
``Ready``; the core only reads. Entries the core has produced but the driver has not yet
persisted live in the core's own unstable buffer, not here.

Indices: the log holds entries ``first_index() .. last_index()``. ``term(first_index() - 1)`` is
also answerable (the term of the entry just before the log: 0 for an empty, uncompacted log, else
the term of the last compacted entry).

Snapshots and compaction (etcd style, the driver's side):

- **Taking a snapshot** (any node): after ``node.advance(ready)``, serialise the state machine,
  which then reflects exactly ``node.applied_index``, and call
  ``storage.create_snapshot(node.applied_index, node.conf_state, data)``; then
  ``storage.compact(index)`` drops the entries the snapshot covers (a driver may keep a few
  entries behind, compacting to a lower index, so slightly lagging followers need no snapshot).
  The core reads ``snapshot()`` when a follower needs entries that are gone.
- **Receiving one** (``Ready.snapshot`` on a follower): ``storage.apply_snapshot(snapshot)``
  before appending ``Ready.entries``, and restore the state machine from ``snapshot.data``
  before applying ``Ready.committed``.
- **Restarting**: ``initial_state()`` returns the membership as of the latest snapshot (or the
  bootstrap membership if none); a driver restores its state machine from ``snapshot()`` and
  constructs the node with ``applied`` at least the snapshot's index.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from consensus.errors import (
    CompactedError,
    LocalProtocolError,
    SnapshotOutOfDateError,
    SnapshotUnavailableError,
    UnavailableError,
)
from consensus.messages import ConfState, Entry, HardState, Snapshot, SnapshotMeta, entry_size

__all__ = ["MemoryStorage", "Snapshot", "SnapshotMeta", "Storage", "limit_size"]


class Storage(Protocol):
    """What a Raft core reads from durable storage.

    Contracts: ``entries`` and ``term`` raise ``CompactedError`` for indices below
    ``first_index()`` (``term`` accepts ``first_index() - 1``) and ``UnavailableError`` above
    ``last_index()``; no other exception is expected by the core.
    """

    def initial_state(self) -> tuple[HardState, ConfState]:
        """The persisted hard state, and the membership as of the latest snapshot (the bootstrap
        membership when there is none); read once when a node starts."""
        ...

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries ``[lo, hi)``, cut after ``max_bytes`` (by ``entry_size``) but never empty when
        ``lo < hi``."""
        ...

    def term(self, index: int) -> int:
        """Term of the entry at ``index`` (see the class contract for valid indices)."""
        ...

    def first_index(self) -> int:
        """Index of the first entry available (1 for a log never compacted)."""
        ...

    def last_index(self) -> int:
        """Index of the last entry (``first_index() - 1`` when the log is empty)."""
        ...

    def snapshot(self) -> Snapshot:
        """The most recent snapshot; ``SnapshotUnavailableError`` if none was taken or applied.
        Every compacted entry is covered by it (``first_index() - 1 <= snapshot().meta.index``).
        """
        ...


def limit_size(entries: Sequence[Entry], max_bytes: int | None) -> list[Entry]:
    """The longest prefix of ``entries`` within ``max_bytes``, but at least one entry."""
    if max_bytes is None or not entries:
        return list(entries)
    total = 0
    for i, e in enumerate(entries):
        total += entry_size(e)
        if total > max_bytes and i > 0:
            return list(entries[:i])
    return list(entries)


class MemoryStorage:
    """An in-memory ``Storage`` (tests, the simulator, and learners that rebuild on restart).

    Keeps a dummy entry at position 0 of its list holding the index/term just before the log
    (etcd's layout); compaction moves it forward. The driver calls ``apply_snapshot``,
    ``set_hard_state`` and ``append`` when handling a ``Ready``, and ``create_snapshot`` /
    ``compact`` when it decides to compact (see the module docstring).
    """

    def __init__(
        self,
        hard_state: HardState | None = None,
        conf_state: ConfState | None = None,
    ) -> None:
        self._hard_state = hard_state or HardState()
        self._conf_state = conf_state or ConfState()
        self._ents: list[Entry] = [Entry(index=0, term=0)]
        self._snapshot = Snapshot()

    # --- reads (Storage protocol) -------------------------------------------------------------

    def initial_state(self) -> tuple[HardState, ConfState]:
        return self._hard_state, self._conf_state

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        offset = self._ents[0].index
        if lo <= offset:
            raise CompactedError(f"index {lo} compacted (first index {offset + 1})")
        if hi > self.last_index() + 1:
            raise UnavailableError(f"entries up to {hi - 1} requested, last is {self.last_index()}")
        return limit_size(self._ents[lo - offset : hi - offset], max_bytes)

    def term(self, index: int) -> int:
        offset = self._ents[0].index
        if index < offset:
            raise CompactedError(f"term of index {index} compacted (offset {offset})")
        if index - offset >= len(self._ents):
            raise UnavailableError(f"term of index {index} requested, last is {self.last_index()}")
        return self._ents[index - offset].term

    def first_index(self) -> int:
        return self._ents[0].index + 1

    def last_index(self) -> int:
        return self._ents[0].index + len(self._ents) - 1

    def snapshot(self) -> Snapshot:
        if self._snapshot.meta.index == 0:
            raise SnapshotUnavailableError("no snapshot taken yet")
        return self._snapshot

    def snapshot_index(self) -> int:
        """Index of the snapshot held (0 if none)."""
        return self._snapshot.meta.index

    # --- writes (the driver's side) ------------------------------------------------------------

    @property
    def hard_state(self) -> HardState:
        """The hard state last set."""
        return self._hard_state

    @property
    def conf_state(self) -> ConfState:
        """The membership last set."""
        return self._conf_state

    def set_hard_state(self, hs: HardState) -> None:
        """Persist a new hard state (the driver does this before sending a Ready's messages)."""
        self._hard_state = hs

    def set_conf_state(self, cs: ConfState) -> None:
        """Set the bootstrap membership (before any snapshot; later membership changes travel
        in CONFIG entries and snapshots, and the core replays them itself)."""
        self._conf_state = cs

    def apply_snapshot(self, snap: Snapshot) -> None:
        """Replace the whole log by ``snap`` (a follower installing the leader's snapshot):
        every entry is dropped, the log continues after ``snap.meta.index``, and the membership
        becomes the snapshot's. Raises ``SnapshotOutOfDateError`` unless ``snap`` is newer than
        the snapshot held."""
        meta = snap.meta
        if meta.index <= self._snapshot.meta.index:
            raise SnapshotOutOfDateError(
                f"snapshot at {meta.index} is not newer than the one held ({self._snapshot.meta})"
            )
        self._ents = [Entry(index=meta.index, term=meta.term)]
        self._snapshot = snap
        self._conf_state = meta.conf_state

    def create_snapshot(self, index: int, conf_state: ConfState, data: bytes) -> Snapshot:
        """Record a snapshot of the state machine as of ``index`` (``data``) with the membership
        as of ``index``; returns it. Entries are kept until ``compact``. Raises
        ``SnapshotOutOfDateError`` if ``index`` is not above the snapshot held and
        ``UnavailableError`` if it is beyond the last index."""
        if index <= self._snapshot.meta.index:
            raise SnapshotOutOfDateError(
                f"snapshot at {index} requested, one at {self._snapshot.meta.index} is held"
            )
        if index > self.last_index():
            raise UnavailableError(f"snapshot at {index} beyond last index {self.last_index()}")
        snap = Snapshot(SnapshotMeta(index, self.term(index), conf_state), data)
        self._snapshot = snap
        self._conf_state = conf_state
        return snap

    def compact(self, index: int) -> None:
        """Drop the entries up to and including ``index``, which the held snapshot must cover.
        Compacting to an index already compacted is a no-op. Raises ``UnavailableError`` beyond
        the last index and ``LocalProtocolError`` beyond the snapshot."""
        offset = self._ents[0].index
        if index <= offset:
            return
        if index > self.last_index():
            raise UnavailableError(f"compact to {index} beyond last index {self.last_index()}")
        if index > self._snapshot.meta.index:
            raise LocalProtocolError(
                f"compact to {index} beyond the snapshot ({self._snapshot.meta.index}): take a "
                "snapshot first"
            )
        term = self._ents[index - offset].term
        self._ents = [Entry(index=index, term=term), *self._ents[index - offset + 1 :]]

    def append(self, entries: Sequence[Entry]) -> None:
        """Append consecutive ``entries``, first truncating any suffix they conflict with.

        Entries already compacted are skipped; a gap after the last index is a caller bug
        (``UnavailableError``).
        """
        if not entries:
            return
        first = self.first_index()
        if entries[-1].index < first:
            return
        if entries[0].index < first:
            entries = entries[first - entries[0].index :]
        offset = entries[0].index - self._ents[0].index
        if offset > len(self._ents):
            raise UnavailableError(
                f"append at {entries[0].index} leaves a gap after last index {self.last_index()}"
            )
        del self._ents[offset:]
        self._ents.extend(entries)

    def all_entries(self) -> list[Entry]:
        """Every entry held (for checkers and tests)."""
        return self._ents[1:]
