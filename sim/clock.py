"""Per-node clocks: each node sees a skewed, drifting view of virtual time.

A node's local time is ``offset + e + e * ppm // 1e6`` where ``e`` is the virtual time elapsed
since the clock was (re)based. Local time is monotonic (ppm > -1e6), starts at an arbitrary offset
(as a fresh process's monotonic clock does) and can change its drift rate mid-run without going
backwards. ``to_virtual`` inverts it, so a core's local deadline becomes a virtual event time.
"""

from __future__ import annotations

from consensus.core import Micros

PPM = 1_000_000


class NodeClock:
    """A monotonic local clock with a constant offset and a drift rate in parts per million."""

    __slots__ = ("base", "offset", "ppm")

    def __init__(self, virtual_now: Micros, offset: Micros = 0, ppm: int = 0) -> None:
        if ppm <= -PPM:
            raise ValueError(f"drift {ppm} ppm would stop or reverse the clock")
        self.base = virtual_now
        self.offset = offset
        self.ppm = ppm

    def local(self, virtual: Micros) -> Micros:
        """The node's local time at virtual time ``virtual`` (>= the clock's base)."""
        e = virtual - self.base
        if not self.ppm:
            return self.offset + e
        return self.offset + e + (e * self.ppm) // PPM

    def to_virtual(self, local: Micros) -> Micros:
        """The earliest virtual time at which the local clock reads at least ``local``."""
        want = local - self.offset
        if want <= 0:
            return self.base
        if not self.ppm:
            return self.base + want
        e = (want * PPM) // (PPM + self.ppm)
        while e + (e * self.ppm) // PPM < want:
            e += 1
        while e > 0 and (e - 1) + ((e - 1) * self.ppm) // PPM >= want:
            e -= 1
        return self.base + e

    def set_drift(self, virtual_now: Micros, ppm: int) -> None:
        """Change the drift rate from ``virtual_now`` on, keeping local time continuous."""
        if ppm <= -PPM:
            raise ValueError(f"drift {ppm} ppm would stop or reverse the clock")
        self.offset = self.local(virtual_now)
        self.base = virtual_now
        self.ppm = ppm
