"""Plain-data outputs of the SWIM core: events, outgoing messages, ``SwimReady``, member views."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from consensus.core import Micros, NodeId
from consensus.swim_messages import MemberStatus, Meta, PacketMsg, PushPull


class EventKind(enum.Enum):
    """What changed about a member, as this node sees it."""

    JOINED = "joined"
    """A member never seen before (or forgotten, or that had left) is alive."""
    UPDATED = "updated"
    """A live member's metadata changed (a newer metadata version)."""
    SUSPECTED = "suspected"
    """A live member is suspected of having failed."""
    ALIVE = "alive"
    """A suspected or dead member is alive again (it refuted, or came back with a higher
    incarnation)."""
    DEAD = "dead"
    """A member was declared dead (its suspicion timed out here or elsewhere)."""
    LEFT = "left"
    """A member left gracefully."""


@dataclass(frozen=True, slots=True)
class SwimEvent:
    """One membership change, with the member's record after it. ``source`` is who accused the
    member (suspected, dead) or the member itself."""

    kind: EventKind
    node: NodeId
    at: Micros
    incarnation: int
    meta_version: int
    meta: Meta
    source: NodeId


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message to send to ``addr`` (``to`` is the node id when known, ``""`` for a seed)."""

    to: NodeId
    addr: str
    msg: PacketMsg | PushPull
    size: int = 0
    """An upper bound on the encoded size in bytes (for budgets and load accounting)."""


@dataclass(slots=True)
class SwimReady:
    """Outputs of the SWIM core since the last ``ready()``.

    Ordering contract: none between lists; within each list, send in order. ``packets`` go by
    the best-effort datagram path (loss is tolerated); ``streams`` are ``PushPull`` requests or
    responses for the reliable stream path (a failed stream is simply dropped: the core retries on
    its own schedule). Nothing needs to be persisted.
    """

    packets: list[Outgoing] = field(default_factory=list)
    streams: list[Outgoing] = field(default_factory=list)
    events: list[SwimEvent] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.packets or self.streams or self.events)


@dataclass(frozen=True, slots=True)
class MemberView:
    """A read-only snapshot of one member's record."""

    node: NodeId
    status: MemberStatus
    incarnation: int
    meta_version: int
    meta: Meta
    since: Micros
    """When the status last changed (local time of this node)."""


@dataclass(slots=True)
class Member:
    """The core's mutable record of one member (internal)."""

    node: NodeId
    status: MemberStatus
    incarnation: int
    meta_version: int
    meta: Meta
    since: Micros

    def view(self) -> MemberView:
        return MemberView(
            self.node, self.status, self.incarnation, self.meta_version, self.meta, self.since
        )
