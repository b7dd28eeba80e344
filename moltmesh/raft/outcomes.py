"""The Raft driver's outcomes and bookkeeping: what a proposal ends with (``Unavailable``,
``OutcomeUnknown``), a proposal waiting for its entry, the counters behind ``/metrics``."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections import deque
from dataclasses import dataclass, field

from consensus.kv import KvResult
from consensus.kv_types import KvCommand

FSYNC_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class Unavailable(Exception):
    """Not applied, and never will be from this attempt (HTTP 503); ``reason`` says why."""

    def __init__(self, reason: str, leader: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.leader = leader


class OutcomeUnknown(Exception):
    """The deadline passed after the proposal left: it may or may not be applied (HTTP 504)."""


def now_us() -> int:
    return time.monotonic_ns() // 1000


@dataclass
class Stats:
    """Counters for ``/metrics`` and status."""

    proposals: int = 0
    proposal_entries: int = 0  # log entries the proposals went into (a Batch holds several)
    proposals_failed: int = 0
    reads: int = 0
    readies: int = 0
    snapshots_refused: int = 0  # installed snapshots that did not restore: not persisted
    fsync_count: int = 0
    fsync_sum: float = 0.0
    fsync_buckets: list[int] = field(default_factory=lambda: [0] * len(FSYNC_BUCKETS))

    def observe_fsync(self, seconds: float) -> None:
        self.fsync_count += 1
        self.fsync_sum += seconds
        for i, b in enumerate(FSYNC_BUCKETS):
            if seconds <= b:
                self.fsync_buckets[i] += 1


class _Proposal:
    """A proposal waiting for its entry to apply: its term, the caller's future, what an
    ``OutcomeUnknown`` says (``what``, or built only then from ``index`` and ``timeout``), the
    encoded command (``data``) and the decoded one when the proposer had it (its entry then
    applies without decoding, and it may share a ``Batch`` entry with others)."""

    __slots__ = ("command", "data", "future", "index", "term", "timeout", "what")

    def __init__(
        self,
        term: int,
        future: asyncio.Future[KvResult | None],
        what: str = "",
        index: int = 0,
        timeout: float = 0.0,
        command: KvCommand | None = None,
        data: bytes = b"",
    ) -> None:
        self.command = command
        self.data = data
        self.term = term
        self.future = future
        self.what = what
        self.index = index
        self.timeout = timeout

    def unknown(self) -> OutcomeUnknown:
        return OutcomeUnknown(
            self.what or f"no commit within {self.timeout} s (entry {self.index})"
        )


class Deadlines:
    """Proposals waiting for their deadline (loop time), the earliest first out.

    Most writes use one timeout, so their deadlines arrive in order: those wait in a FIFO (an
    append and a pop per proposal); one earlier than the last queued waits in a heap instead.
    A proposal whose future is done (answered, failed, cancelled) is dropped when reached."""

    __slots__ = ("_fifo", "_heap", "_seq")

    def __init__(self) -> None:
        self._fifo: deque[tuple[float, _Proposal]] = deque()
        self._heap: list[tuple[float, int, _Proposal]] = []
        self._seq = itertools.count()  # heap tie-breaker: proposals are never compared

    def __len__(self) -> int:
        return len(self._fifo) + len(self._heap)

    def add(self, deadline: float, p: _Proposal) -> None:
        fifo = self._fifo
        if not fifo or deadline >= fifo[-1][0]:
            fifo.append((deadline, p))
        else:
            heapq.heappush(self._heap, (deadline, next(self._seq), p))

    def clear(self) -> None:
        self._fifo.clear()
        self._heap.clear()

    def pop_expired(self, now: float) -> tuple[list[_Proposal], float | None]:
        """The proposals still waiting (future not done) whose deadline is ``now`` or earlier,
        removed, in deadline order per queue; and the earliest deadline of those left
        (``None``: none left)."""
        expired: list[_Proposal] = []
        fifo, heap = self._fifo, self._heap
        while fifo:
            deadline, p = fifo[0]
            if not p.future.done():
                if deadline > now:
                    break
                expired.append(p)
            fifo.popleft()
        while heap:
            deadline, _, p = heap[0]
            if not p.future.done():
                if deadline > now:
                    break
                expired.append(p)
            heapq.heappop(heap)
        if fifo:
            return expired, min(fifo[0][0], heap[0][0]) if heap else fifo[0][0]
        return expired, heap[0][0] if heap else None
