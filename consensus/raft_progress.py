"""A leader's view of each follower's replication (etcd's ``tracker.Progress``).

A follower is in one of two states:

- ``PROBE``: the leader does not know where the follower's log matches; it sends one append at a
  time and waits for the answer (or the next heartbeat response) before sending another.
- ``REPLICATE``: the logs match up to ``match``; the leader streams appends optimistically,
  up to ``max_inflight_msgs`` unacknowledged messages.

- ``SNAPSHOT``: the entries the follower needs are compacted; the leader sent it a snapshot
  (at ``pending_snapshot``) and sends nothing else until an acknowledgement shows the follower
  can continue from the log, or until the snapshot is given up as lost: heartbeats sent
  *after* its latest chunk came back answered while that chunk was not (``snapshot_seq``
  names the chunk a heartbeat followed, ``snapshot_heartbeats`` counts such answers); that
  chunk (at ``snapshot_offset``) is then sent again. A slow chunk round trip is not a loss:
  only its acknowledgement, or an answer to a later message on the same ordered stream without
  it, tells.
"""

from __future__ import annotations

import enum
from collections import deque


class ProgressState(enum.Enum):
    """Replication state of one follower, as seen by the leader."""

    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


class Inflights:
    """Last indices of append messages sent but not yet acknowledged, oldest first."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._q: deque[int] = deque()

    def __len__(self) -> int:
        return len(self._q)

    def full(self) -> bool:
        """True when no more appends may be sent."""
        return len(self._q) >= self.capacity

    def add(self, last_index: int) -> None:
        """Record a sent message whose last entry is ``last_index``."""
        self._q.append(last_index)

    def free_le(self, index: int) -> None:
        """Forget messages acknowledged by an ack up to ``index``."""
        while self._q and self._q[0] <= index:
            self._q.popleft()

    def free_first_one(self) -> None:
        """Forget the oldest message (a heartbeat answer shows the follower is alive)."""
        if self._q:
            self._q.popleft()

    def reset(self) -> None:
        """Forget everything."""
        self._q.clear()


class Progress:
    """What the leader knows of one follower: ``match`` (highest index known replicated),
    ``next`` (next index to send), state, in-flight messages and recent activity."""

    def __init__(self, next_index: int, max_inflight: int) -> None:
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.inflights = Inflights(max_inflight)
        self.recent_active = False
        self.pending_snapshot = 0
        self.snapshot_seq = 0
        """Snapshot chunks sent to this follower (the latest one's number)."""
        self.snapshot_offset = 0
        """Where the latest chunk sent starts."""
        """Snapshot chunks sent to this follower (the latest one's number)."""
        self.snapshot_heartbeats = 0
        """Answers to heartbeats sent after chunk ``snapshot_seq``, which is not acknowledged."""

    def __repr__(self) -> str:
        return (
            f"Progress(match={self.match}, next={self.next}, state={self.state.value}, "
            f"probe_sent={self.probe_sent}, inflight={len(self.inflights)})"
        )

    def become_probe(self) -> None:
        """Fall back to probing from just after ``match`` (a snapshot given up is sent again if
        the entries after ``match`` are still compacted)."""
        self.next = self.match + 1
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.pending_snapshot = 0
        self.inflights.reset()

    def become_replicate(self) -> None:
        """Start streaming from just after ``match``."""
        self.state = ProgressState.REPLICATE
        self.next = self.match + 1
        self.probe_sent = False
        self.pending_snapshot = 0
        self.inflights.reset()

    def become_snapshot(self, index: int) -> None:
        """A snapshot at ``index`` was sent; pause until it is acknowledged or given up."""
        self.state = ProgressState.SNAPSHOT
        self.pending_snapshot = index
        self.sent_snapshot_chunk(0)
        self.next = index + 1
        self.probe_sent = False
        self.inflights.reset()

    def sent_snapshot_chunk(self, offset: int) -> None:
        """A chunk of the pending snapshot starting at ``offset`` left: heartbeats count from
        it."""
        self.snapshot_seq += 1
        self.snapshot_offset = offset
        self.snapshot_heartbeats = 0

    def is_paused(self) -> bool:
        """True when the leader must not send another append now."""
        if self.state is ProgressState.PROBE:
            return self.probe_sent
        if self.state is ProgressState.SNAPSHOT:
            return True
        return self.inflights.full()

    def sent_entries(self, last_index: int | None) -> None:
        """An append was sent; ``last_index`` is its last entry's index (``None``: empty)."""
        if self.state is ProgressState.REPLICATE:
            if last_index is not None:
                self.next = last_index + 1
                self.inflights.add(last_index)
        else:
            self.probe_sent = True

    def maybe_update(self, index: int) -> bool:
        """An ack up to ``index`` arrived; True if ``match`` advanced."""
        updated = index > self.match
        if updated:
            self.match = index
            self.probe_sent = False
        self.next = max(self.next, index + 1)
        return updated

    def maybe_decrease(self, rejected: int, retry_next: int) -> bool:
        """A rejection of the append after ``rejected`` arrived; ``retry_next`` is where the
        leader's back-off computation says to retry. False if the rejection is stale."""
        if self.state is ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.become_probe()
            self.next = max(self.match + 1, min(retry_next, rejected))
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(self.match + 1, min(retry_next, rejected))
        self.probe_sent = False
        return True
