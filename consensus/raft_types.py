"""Raft's public value types: roles, events and the ``Ready`` output."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from consensus.core import NodeId
from consensus.messages import ConfChange, ConfState, Entry, HardState, Message, Snapshot


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


@dataclass(frozen=True, slots=True)
class ConfChanged:
    """This node's membership became ``conf``: ``change`` (the CONFIG entry at ``index``) was
    applied, or a snapshot at ``index`` was installed (``change`` is ``None``). Reported in the
    Ready after the one whose ``advance`` applied it."""

    index: int
    conf: ConfState
    change: ConfChange | None


@dataclass(frozen=True, slots=True)
class ReadIndexFailed:
    """The linearizable read ``context`` will never get a ``ReadState``: the leader serving it
    lost leadership, or the leader it was forwarded to refused it. Reads have no effect, so the
    caller may retry at once (``leader_hint``: where, ``None`` if no leader is known)."""

    context: bytes
    leader_hint: NodeId | None


@dataclass(frozen=True, slots=True)
class TransferAborted:
    """The leadership transfer to ``to`` started in ``term`` was abandoned (an election
    timeout passed, the target left the group, or a new transfer replaced it); the leader
    accepts proposals again."""

    to: NodeId
    term: int


RaftEvent = RoleChanged | LeaderChanged | ConfChanged | ReadIndexFailed | TransferAborted
"""Events reported in ``Ready.events``, in the order they happened."""


@dataclass(frozen=True, slots=True)
class ReadState:
    """A linearizable read may be served: once the state machine has applied ``index`` (or
    more), reading it is linearizable for the read identified by ``context`` (ReadIndex,
    thesis §6.4)."""

    context: bytes
    index: int


@dataclass(slots=True)
class Ready:
    """Everything the core asks its driver to do. Handle it IN THIS ORDER:

    1. durably persist, in this order: ``snapshot`` if not ``None`` (the leader sent it:
       ``MemoryStorage.apply_snapshot``), ``hard_state`` (if not ``None``: it changed), then
       append ``entries`` (``MemoryStorage.append`` truncates any conflicting suffix);
    2. only then send ``messages`` (each carries ``src``, ``dst`` and ``term``) — a vote or an
       acknowledgement must never leave before what it promises is on disk. Exception: the
       first ``early`` messages (a leader's appends and heartbeats, thesis §10.2.1) MAY be sent
       before step 1, in parallel with the fsync; a driver that sends them with the rest is
       also correct (the leader counts its own entries toward commit only once ``advance``
       says they are persisted);
    3. if ``snapshot`` is set, replace the state machine by ``snapshot.data`` (it then reflects
       ``snapshot.meta.index``); then apply ``committed`` entries in index order (they follow
       the snapshot, and may include entries from this same Ready's ``entries``, hence step 1
       first). CONFIG and NOOP entries are Raft's own: the state machine skips them (the core
       applies CONFIG entries itself in ``advance``);
    4. answer each ``read_states`` read once the state machine has applied its ``index``
       (immediately if it already has);
    5. call ``node.advance(ready)``.

    ``events`` report role, leader and membership changes, failed reads and aborted transfers.
    The driver may keep calling ``step``/``tick``/``propose`` between ``ready()`` and
    ``advance()``; their outputs wait for the next ``Ready``.
    """

    hard_state: HardState | None = None
    entries: list[Entry] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    committed: list[Entry] = field(default_factory=list)
    events: list[RaftEvent] = field(default_factory=list)
    snapshot: Snapshot | None = None
    read_states: list[ReadState] = field(default_factory=list)
    early: int = 0
