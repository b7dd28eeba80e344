"""The discrete-event kernel: a virtual clock and a heap of (time, seq) events.

Contract:

- Time is virtual, an integer count of microseconds since the start of the run; it only moves
  forward, and only when the next event is popped.
- Events scheduled for the same time run in the order they were scheduled: ``seq`` is a global
  counter that breaks ties, so the order never depends on the callbacks or their arguments and a
  run is reproducible bit for bit.
- A callback may schedule more events, at ``now`` or later, never in the past.

Nothing here knows about nodes, networks or cores; ``sim.cluster`` builds on it.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from collections.abc import Callable
from typing import Any

from consensus.core import Micros


def derive_rng(seed: int, concern: str) -> random.Random:
    """A ``random.Random`` for one concern (network, faults, clients, a node's core ...).

    Derived from the run seed and the concern's name by SHA-256, so that concerns draw from
    independent streams (adding a draw in the network never shifts the faults) and the result
    does not depend on PYTHONHASHSEED.
    """
    digest = hashlib.sha256(f"{seed}/{concern}".encode()).digest()
    return random.Random(int.from_bytes(digest[:16], "big"))


class Kernel:
    """A virtual clock and an event heap ordered by (time, seq)."""

    __slots__ = ("_heap", "_seq", "events_run", "now")

    def __init__(self) -> None:
        self.now: Micros = 0
        self._heap: list[tuple[int, int, Callable[..., Any], tuple[Any, ...]]] = []
        self._seq = 0
        self.events_run = 0

    def at(self, when: Micros, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` at virtual time ``when`` (clamped to ``now`` if in the past)."""
        if when < self.now:
            when = self.now
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, fn, args))

    def after(self, delay: Micros, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` ``delay`` µs from now."""
        self.at(self.now + max(0, delay), fn, *args)

    def next_time(self) -> Micros | None:
        """Time of the next pending event, or ``None`` when the heap is empty."""
        return self._heap[0][0] if self._heap else None

    def pending(self) -> int:
        """Number of scheduled events (including ones their owners will ignore as stale)."""
        return len(self._heap)

    def run_until(self, end: Micros, stop: Callable[[], bool] | None = None) -> bool:
        """Run events with time <= ``end``; then set ``now = end``.

        If ``stop`` is given it is called after every event, and the run returns early (``now``
        left at that event's time) as soon as it returns True. Returns True iff stopped early.
        """
        heap = self._heap
        pop = heapq.heappop
        while heap and heap[0][0] <= end:
            when, _seq, fn, args = pop(heap)
            self.now = when
            self.events_run += 1
            fn(*args)
            if stop is not None and stop():
                return True
        if end > self.now:
            self.now = end
        return False
