"""How the simulator drives one kind of core: the adapter protocol and the per-node host state.

The simulator (``sim.cluster``) knows only the ``consensus.core.Core`` protocol: ``step``,
``tick``, ``next_deadline``, ``has_ready``, ``ready``. Everything specific to a core kind lives
in an ``Adapter``:

- ``new_disk`` / ``crash`` / ``boot`` — what is durable. ``crash`` returns what survives a crash
  (the disk as persisted; anything only in memory is lost with the core) and ``boot`` builds a
  fresh core from it, as a restarted process would.
- ``persist`` — write a Ready's durable part (hard state, entries) to the disk. The cluster calls
  it *before* it sends that Ready's messages, after an optional simulated fsync delay; a crash
  during that delay loses the whole Ready.
- ``messages`` / ``route`` — the outbound messages of a Ready and their (source, destination).
- ``apply`` — hand committed entries to the node's state machine (``SimNode.app``, volatile).
- ``advance`` — tell the core its Ready was handled.
- ``encode`` / ``decode`` / ``size`` — the wire codec (used when the run asks for ``wire``) and a
  byte size for bandwidth accounting.

Optional: ``reliable(msg) -> bool`` marks messages the real driver sends over a stream (TCP),
which the simulated network then never loses, duplicates or reorders (partitions still cut them).

A core kind without persistence (SWIM) implements ``persist``/``advance`` as no-ops and ``crash``
returns a fresh disk.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from consensus.core import Micros, NodeId

from .clock import NodeClock

CoreT = TypeVar("CoreT")


@dataclass(slots=True)
class Booted(Generic[CoreT]):
    """A freshly started core and its node's volatile application state."""

    core: CoreT
    app: Any = None


@dataclass(slots=True, eq=False)
class SimNode:
    """The simulator's host for one node: its core, disk, clock and timer bookkeeping."""

    id: NodeId
    disk: Any
    core: Any = None
    app: Any = None
    up: bool = False
    incarnation: int = 0
    """Boot count; events addressed to an older incarnation (timers, fsyncs) are ignored."""
    clock: NodeClock = field(default_factory=lambda: NodeClock(0))
    timer_at: Micros | None = None
    persisting: bool = False
    """A Ready is being persisted (simulated fsync); the next one waits until it is done."""
    same_time_ticks: int = 0
    last_tick_at: Micros = -1

    def now(self, virtual: Micros) -> Micros:
        """The node's local time at virtual time ``virtual``."""
        return self.clock.local(virtual)


class Adapter(Protocol):
    """What the simulator needs to drive one kind of core (see the module docstring)."""

    kind: str

    def new_disk(self, node_id: NodeId) -> Any:
        """An empty disk for a node that has never run."""

    def boot(self, node_id: NodeId, disk: Any, rng: random.Random, now: Micros) -> Booted[Any]:
        """Start a core from ``disk`` at local time ``now``."""

    def crash(self, node_id: NodeId, disk: Any) -> Any:
        """What of ``disk`` survives a crash."""

    def persist(self, node: SimNode, ready: Any) -> None:
        """Make the durable part of ``ready`` durable in ``node.disk``."""

    def messages(self, ready: Any) -> Sequence[Any]:
        """The messages ``ready`` asks to send."""

    def route(self, msg: Any) -> tuple[NodeId, NodeId]:
        """(source, destination) of a message."""

    def apply(self, node: SimNode, ready: Any, now: Micros) -> None:
        """Apply ``ready``'s committed entries / events to ``node.app``."""

    def advance(self, node: SimNode, ready: Any) -> None:
        """Acknowledge ``ready`` to the core."""

    def encode(self, msg: Any) -> bytes:
        """Wire encoding of ``msg``."""

    def decode(self, data: bytes) -> Any:
        """Inverse of ``encode``."""

    def size(self, msg: Any) -> int:
        """Approximate wire size of ``msg`` in bytes (for bandwidth without ``wire``)."""
