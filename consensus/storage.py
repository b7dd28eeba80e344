"""The storage a Raft core reads, and an in-memory implementation.

etcd style: the *driver* writes to storage (``append``, ``set_hard_state``) when it handles a
``Ready``; the core only reads. Entries the core has produced but the driver has not yet
persisted live in the core's own unstable buffer, not here.

Indices: the log holds entries ``first_index() .. last_index()``. ``term(first_index() - 1)`` is
also answerable (the term of the entry just before the log: 0 for an empty, uncompacted log; the
snapshot's term once compaction arrives with the snapshot issue).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from consensus.errors import CompactedError, SnapshotUnavailableError, UnavailableError
from consensus.messages import ConfState, Entry, HardState, entry_size


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    """Where a snapshot sits in the log (reserved for the snapshot issue)."""

    index: int = 0
    term: int = 0
    conf_state: ConfState = field(default_factory=ConfState)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A state-machine snapshot and its position (reserved for the snapshot issue)."""

    meta: SnapshotMeta = field(default_factory=SnapshotMeta)
    data: bytes = b""


class Storage(Protocol):
    """What a Raft core reads from durable storage.

    Contracts: ``entries`` and ``term`` raise ``CompactedError`` for indices below
    ``first_index()`` (``term`` accepts ``first_index() - 1``) and ``UnavailableError`` above
    ``last_index()``; no other exception is expected by the core.
    """

    def initial_state(self) -> tuple[HardState, ConfState]:
        """The persisted hard state and membership, read once when a node starts."""
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
        """The most recent snapshot; ``SnapshotUnavailableError`` if none (snapshot issue)."""
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
    (etcd's layout), so compaction can move it forward in the snapshot issue.
    The driver calls ``append`` and ``set_hard_state`` when handling a ``Ready``.
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
        """Persist a new membership."""
        self._conf_state = cs

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
