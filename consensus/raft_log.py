"""Raft's log as the core sees it: durable entries in ``Storage`` plus an unstable tail.

The unstable tail holds entries the core has accepted but the driver has not yet persisted
(etcd's ``unstable``). Entries at index ≥ ``offset`` come from the tail and take precedence over
storage, which may still hold an older, conflicting suffix until the driver appends the tail.

A snapshot received from the leader is also unstable until the driver persists it
(``pending_snapshot``): meanwhile the log starts just after it, whatever storage holds.
"""

from __future__ import annotations

from collections.abc import Sequence

from consensus.errors import CompactedError, RaftInvariantError, UnavailableError
from consensus.messages import Entry, Snapshot
from consensus.storage import Storage, limit_size


class RaftLog:
    """Durable + unstable entries, and the commit / applied indices."""

    def __init__(self, storage: Storage, committed: int = 0, applied: int = 0) -> None:
        self.storage = storage
        self.offset = storage.last_index() + 1
        self.unstable: list[Entry] = []
        self.pending_snapshot: Snapshot | None = None
        first = storage.first_index()
        last = storage.last_index()
        if committed > last:
            raise RaftInvariantError(f"hard state commit {committed} beyond last index {last}")
        self.committed = committed
        self.applied = max(applied, first - 1)
        if self.applied > self.committed:
            raise RaftInvariantError(f"applied {applied} beyond commit {committed}")

    # --- reading ---------------------------------------------------------------------------------

    def first_index(self) -> int:
        """First index available (just after a pending snapshot, else storage's)."""
        if self.pending_snapshot is not None:
            return self.pending_snapshot.meta.index + 1
        return self.storage.first_index()

    def last_index(self) -> int:
        """Last index, counting the unstable tail (and a pending snapshot)."""
        if self.unstable:
            return self.unstable[-1].index
        if self.pending_snapshot is not None:
            return self.pending_snapshot.meta.index
        return self.storage.last_index()

    def term(self, index: int) -> int | None:
        """Term at ``index``; ``None`` if compacted or beyond the last index."""
        if index >= self.offset:
            pos = index - self.offset
            return self.unstable[pos].term if pos < len(self.unstable) else None
        snap = self.pending_snapshot
        if snap is not None:
            return snap.meta.term if index == snap.meta.index else None
        if index < self.first_index() - 1:
            return None
        try:
            return self.storage.term(index)
        except (CompactedError, UnavailableError):
            return None

    def last_term(self) -> int:
        """Term of the last entry (0 for an empty log)."""
        term = self.term(self.last_index())
        if term is None:  # pragma: no cover - storage contract guarantees it
            raise RaftInvariantError("term of the last index is unavailable")
        return term

    def match_term(self, index: int, term: int) -> bool:
        """True when the log holds an entry at ``index`` with ``term``."""
        return self.term(index) == term

    def entries(self, lo: int, hi: int | None = None, max_bytes: int | None = None) -> list[Entry]:
        """Entries ``[lo, hi)`` (``hi`` defaults past the last), cut at ``max_bytes`` (≥ 1 entry).

        Raises ``CompactedError`` if ``lo`` is compacted.
        """
        last = self.last_index()
        hi = last + 1 if hi is None else min(hi, last + 1)
        if lo >= hi:
            return []
        out: list[Entry] = []
        if lo < self.offset:
            if self.pending_snapshot is not None:
                raise CompactedError(f"index {lo} is covered by the pending snapshot")
            out = self.storage.entries(lo, min(hi, self.offset), max_bytes)
            if len(out) < min(hi, self.offset) - lo:
                return out  # cut by max_bytes
        if hi > self.offset:
            start = max(lo, self.offset) - self.offset
            out.extend(self.unstable[start : hi - self.offset])
        return limit_size(out, max_bytes)

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """§5.4.1: is a log ending at ``(last_index, last_term)`` at least as up to date?"""
        my_term = self.last_term()
        return last_term > my_term or (last_term == my_term and last_index >= self.last_index())

    def first_index_of_term(self, index: int) -> int:
        """The first index of the run of entries with the same term as ``index`` (back-off hint)."""
        term = self.term(index)
        lo = max(self.first_index(), self.committed + 1)
        while index > lo and self.term(index - 1) == term:
            index -= 1
        return index

    # --- writing ---------------------------------------------------------------------------------

    def append(self, entries: Sequence[Entry]) -> int:
        """Append ``entries`` (consecutive), truncating a conflicting tail; returns last index."""
        if not entries:
            return self.last_index()
        after = entries[0].index
        if after - 1 < self.committed:
            raise RaftInvariantError(f"append at {after} would truncate committed {self.committed}")
        if after == self.offset + len(self.unstable):
            self.unstable.extend(entries)
        elif after <= self.offset:
            # Replace the whole tail; the driver truncates storage's conflicting suffix.
            self.offset = after
            self.unstable = list(entries)
        else:
            self.unstable = self.unstable[: after - self.offset] + list(entries)
        return self.last_index()

    def find_conflict(self, entries: Sequence[Entry]) -> int:
        """Index of the first of ``entries`` not already in the log with its term; 0 if none."""
        for e in entries:
            if not self.match_term(e.index, e.term):
                return e.index
        return 0

    def maybe_append(
        self, prev_index: int, prev_term: int, commit: int, entries: Sequence[Entry]
    ) -> int | None:
        """Follower side of AppendEntries: ``None`` if ``(prev_index, prev_term)`` does not
        match; else appends what is new, advances commit, returns the last index now matched."""
        if not self.match_term(prev_index, prev_term):
            return None
        last_new = prev_index + len(entries)
        conflict = self.find_conflict(entries)
        if conflict:
            if conflict <= self.committed:
                raise RaftInvariantError(
                    f"entry {conflict} conflicts with committed prefix (commit {self.committed})"
                )
            self.append(entries[conflict - entries[0].index :])
        self.commit_to(min(commit, last_new))
        return last_new

    def commit_to(self, index: int) -> bool:
        """Raise the commit index to ``index`` (never lowers it); True if it moved."""
        if index <= self.committed:
            return False
        if index > self.last_index():
            raise RaftInvariantError(f"commit {index} beyond last index {self.last_index()}")
        self.committed = index
        return True

    def stable_to(self, index: int, term: int) -> None:
        """The driver persisted the tail up to ``(index, term)``: drop it from the tail unless it
        has been replaced since (then the newer entries stay unstable)."""
        if index < self.offset or self.term(index) != term:
            return
        self.unstable = self.unstable[index + 1 - self.offset :]
        self.offset = index + 1

    def restore(self, snap: Snapshot) -> None:
        """Replace the whole log by ``snap`` (a follower installing the leader's snapshot): the
        log continues after it and everything up to it is committed. The driver persists it
        from ``pending_snapshot`` and then calls ``snapshot_stable``."""
        if snap.meta.index <= self.committed:
            raise RaftInvariantError(
                f"snapshot at {snap.meta.index} would roll back commit {self.committed}"
            )
        self.pending_snapshot = snap
        self.offset = snap.meta.index + 1
        self.unstable = []
        self.committed = snap.meta.index

    def snapshot_stable(self, snap: Snapshot) -> None:
        """The driver persisted ``snap`` and restored its state machine from it: the log now
        reads through storage again, and everything up to ``snap`` counts as applied."""
        if self.pending_snapshot is snap:
            self.pending_snapshot = None
        self.applied = max(self.applied, snap.meta.index)

    def applied_to(self, index: int) -> None:
        """The driver applied entries up to ``index``."""
        if index > self.committed or index < self.applied:
            raise RaftInvariantError(
                f"applied_to({index}) outside [applied {self.applied}, commit {self.committed}]"
            )
        self.applied = index
