"""The protocol every consensus core follows (Raft, SWIM).

A core is a plain object fed events; it never reads a clock, opens a socket, sleeps or spawns a
task. Time is an integer count of microseconds handed in by the driver; randomness comes from a
``random.Random`` passed to the constructor.

Driving contract (the same for the asyncio driver and the simulator):

1. Deliver an inbound message with ``step(msg, now)``; fire timers with ``tick(now)`` whenever
   ``now >= next_deadline()``.
2. After either call, take the outputs with ``ready()``: what to persist, what to send, what to
   apply, events. The concrete ``Ready`` type states its own ordering contract (Raft: persist
   *before* sending).
3. ``next_deadline()`` is the absolute time (µs) at which the core next needs ``tick``; ``None``
   means no timer is pending. A driver sleeps exactly until then; the simulator jumps to it.

Calls are not thread-safe; one driver owns one core.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

NodeId = str
"""A node's identity: a short stable string (derived from its Ed25519 key by the node)."""

Micros = int
"""An absolute time or a duration in integer microseconds."""

MICROS_PER_MS = 1_000
MICROS_PER_SECOND = 1_000_000

MsgT = TypeVar("MsgT", contravariant=True)
ReadyT = TypeVar("ReadyT", covariant=True)


class Core(Protocol[MsgT, ReadyT]):
    """What a driver needs from a consensus core."""

    @property
    def id(self) -> NodeId: ...

    def step(self, msg: MsgT, now: Micros) -> None:
        """Feed one inbound message received at ``now``."""

    def tick(self, now: Micros) -> None:
        """Advance timers to ``now``; fire those that are due."""

    def next_deadline(self) -> Micros | None:
        """Absolute time of the next timer, or ``None`` when none is pending."""

    def has_ready(self) -> bool:
        """True when ``ready()`` would return outputs."""

    def ready(self) -> ReadyT:
        """Take (and clear) the pending outputs."""
