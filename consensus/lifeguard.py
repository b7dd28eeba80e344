"""Lifeguard and SWIM arithmetic: small pure helpers, as in hashicorp/memberlist.

Every function here is a pure function of its arguments (no clock, no randomness) so that each can
be tested table-driven. Durations are integer microseconds.

- ``suspicion_timeout``: the minimum time a member stays suspect before it is declared dead,
  scaled by log10 of the cluster size (memberlist ``suspicionTimeout``).
- ``remaining_suspicion_time``: Lifeguard's dynamic suspicion timeout; it starts at ``max`` and
  shrinks toward ``min`` as independent confirmations arrive:
  ``max(min, max - (max - min) * log(c + 1) / log(k + 1))`` (memberlist ``remainingSuspicionTime``).
- ``retransmit_limit``: how many times one update is piggybacked, ``mult * ceil(log10(n + 1))``.
- ``push_pull_interval``: the push-pull period, growing with log2 of the cluster size past 32.
- ``Awareness``: Lifeguard's local health score; missed acks and nacks raise it, successful probes
  lower it, and it multiplies probe timeouts and intervals.
- ``Suspicion``: the state of one suspicion timer (who confirmed it, when it fires).
"""

from __future__ import annotations

import math

from consensus.core import Micros, NodeId

PUSH_PULL_SCALE_THRESHOLD = 32
"""Cluster size up to which the push-pull interval is not scaled (memberlist's constant)."""


def suspicion_timeout(mult: int, n: int, interval: Micros) -> Micros:
    """Minimum suspicion timeout: ``mult * max(1, log10(max(1, n))) * interval``.

    ``n`` is the estimated number of members and ``interval`` the probe interval. The log scale is
    truncated to millis as memberlist does, so results match its table.
    """
    node_scale = max(1.0, math.log10(max(1.0, float(n))))
    return mult * int(node_scale * 1000) * interval // 1000


def remaining_suspicion_time(
    confirmations: int, k: int, elapsed: Micros, minimum: Micros, maximum: Micros
) -> Micros:
    """Time left on a suspicion timer after ``confirmations`` independent confirmations.

    The total timeout is ``max(min, max - (max - min) * log(c + 1) / log(k + 1))`` truncated to a
    whole millisecond; ``elapsed`` (time since the suspicion started) is subtracted. The result may
    be zero or negative, meaning the timer is already due. With ``k < 1`` the timeout is ``min``.
    """
    if k < 1:
        return minimum - elapsed
    frac = math.log(confirmations + 1.0) / math.log(k + 1.0)
    raw = maximum - frac * (maximum - minimum)
    timeout = math.floor(raw / 1000.0) * 1000
    timeout = max(timeout, minimum)
    return timeout - elapsed


def retransmit_limit(mult: int, n: int) -> int:
    """How many times an update is sent before it is dropped: ``mult * ceil(log10(n + 1))``."""
    return mult * math.ceil(math.log10(n + 1.0))


def push_pull_interval(interval: Micros, n: int) -> Micros:
    """Push-pull period for ``n`` members: ``interval`` up to 32, then ×(ceil(log2 n − 5) + 1)."""
    if n <= PUSH_PULL_SCALE_THRESHOLD:
        return interval
    multiplier = math.ceil(math.log2(n) - math.log2(PUSH_PULL_SCALE_THRESHOLD)) + 1
    return interval * multiplier


class Awareness:
    """Lifeguard's local health: a score in ``[0, max_multiplier - 1]``; 0 is healthy.

    ``scale(t)`` returns ``t * (score + 1)``. With ``max_multiplier == 1`` the score is pinned at
    0, which turns local health awareness off.
    """

    __slots__ = ("max_multiplier", "score")

    def __init__(self, max_multiplier: int) -> None:
        if max_multiplier < 1:
            raise ValueError("max_multiplier must be >= 1")
        self.max_multiplier = max_multiplier
        self.score = 0

    def apply_delta(self, delta: int) -> int:
        """Add ``delta`` to the score, clamped to the valid range; returns the new score."""
        self.score = min(max(self.score + delta, 0), self.max_multiplier - 1)
        return self.score

    def scale(self, timeout: Micros) -> Micros:
        """``timeout`` multiplied by the current health multiplier (``score + 1``)."""
        return timeout * (self.score + 1)


class Suspicion:
    """One suspicion timer with Lifeguard's independent confirmations.

    Created when a member is first suspected (``origin`` is who accused it). ``confirm(src)``
    records a distinct accuser other than the origin, up to ``k``, and moves ``deadline`` earlier
    per ``remaining_suspicion_time``. With ``k < 1`` the timer is fixed at ``minimum``.
    """

    __slots__ = ("confirmed", "deadline", "k", "maximum", "minimum", "start")

    def __init__(
        self, origin: NodeId, k: int, minimum: Micros, maximum: Micros, start: Micros
    ) -> None:
        self.k = k
        self.minimum = minimum
        self.maximum = max(maximum, minimum)
        self.start = start
        self.confirmed: set[NodeId] = {origin}
        self.deadline = start + (self.maximum if k >= 1 else minimum)

    @property
    def confirmations(self) -> int:
        """Independent confirmations so far (the origin does not count)."""
        return len(self.confirmed) - 1

    def confirm(self, source: NodeId) -> bool:
        """Record ``source`` as confirming; True if it was new and moved the deadline."""
        if self.confirmations >= self.k or source in self.confirmed:
            return False
        self.confirmed.add(source)
        remaining = remaining_suspicion_time(
            self.confirmations, self.k, 0, self.minimum, self.maximum
        )
        self.deadline = self.start + remaining
        return True
