"""Raft's public value types: roles, events and the ``Ready`` output."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from consensus.core import NodeId
from consensus.messages import Entry, HardState, Message


class Role(enum.Enum):
    """A node's role. PRE_CANDIDATE: asking for pre-votes without having bumped its term."""

    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre_candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


@dataclass(frozen=True, slots=True)
class RoleChanged:
    """This node's role changed to ``role`` in ``term``."""

    role: Role
    term: int


@dataclass(frozen=True, slots=True)
class LeaderChanged:
    """The leader this node knows changed to ``leader`` (``None``: no known leader) in ``term``."""

    leader: NodeId | None
    term: int


RaftEvent = RoleChanged | LeaderChanged
"""Events reported in ``Ready.events``, in the order they happened."""


@dataclass(slots=True)
class Ready:
    """Everything the core asks its driver to do. Handle it IN THIS ORDER:

    1. durably persist ``hard_state`` (if not ``None``: it changed) and append ``entries`` to
       storage (``MemoryStorage.append`` truncates any conflicting suffix);
    2. only then send ``messages`` (each carries ``src``, ``dst`` and ``term``) — a vote or an
       acknowledgement must never leave before what it promises is on disk;
    3. apply ``committed`` entries to the state machine, in index order (they may include
       entries from this same Ready's ``entries``, hence step 1 first);
    4. call ``node.advance(ready)``.

    ``events`` report role and leader changes, for logs and observers. The driver may keep
    calling ``step``/``tick``/``propose`` between ``ready()`` and ``advance()``; their outputs
    wait for the next ``Ready``.
    """

    hard_state: HardState | None = None
    entries: list[Entry] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    committed: list[Entry] = field(default_factory=list)
    events: list[RaftEvent] = field(default_factory=list)
