"""A sans-I/O Raft core in the style of etcd's raft (DESIGN §2, §3, §8).

PUBLIC SKELETON: the API below is stable; the bodies are being filled in.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from consensus.core import Micros, NodeId
from consensus.errors import ConfigError, NotLeader
from consensus.messages import ConfState, Entry, EntryKind, HardState, Message
from consensus.raft_config import RaftConfig
from consensus.storage import MemoryStorage, Storage

__all__ = [
    "ConfState",
    "ConfigError",
    "Entry",
    "EntryKind",
    "HardState",
    "LeaderChanged",
    "MemoryStorage",
    "Message",
    "NotLeader",
    "RaftConfig",
    "RaftEvent",
    "RaftNode",
    "Ready",
    "Role",
    "RoleChanged",
    "Storage",
]


class Role(enum.Enum):
    """A node's role."""

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


@dataclass(slots=True)
class Ready:
    """Everything the core asks its driver to do. Handle in THIS ORDER:

    1. persist ``hard_state`` (if not None) and append ``entries`` to storage, durably;
    2. only then send ``messages`` (each carries ``src``, ``dst``, ``term``);
    3. apply ``committed`` entries to the state machine, in order;
    4. call ``node.advance(ready)``.
    ``events`` report role and leader changes, for logs and observers.
    """

    hard_state: HardState | None = None
    entries: list[Entry] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    committed: list[Entry] = field(default_factory=list)
    events: list[RaftEvent] = field(default_factory=list)


class RaftNode:
    """One Raft node's state machine (see module docstring)."""

    def __init__(
        self,
        id: NodeId,
        voters: Sequence[NodeId],
        storage: Storage,
        config: RaftConfig,
        rng: random.Random,
        *,
        now: Micros = 0,
        applied: int = 0,
    ) -> None:
        raise NotImplementedError

    def step(self, msg: Message, now: Micros) -> None:
        raise NotImplementedError

    def tick(self, now: Micros) -> None:
        raise NotImplementedError

    def next_deadline(self) -> Micros | None:
        raise NotImplementedError

    def has_ready(self) -> bool:
        raise NotImplementedError

    def ready(self) -> Ready:
        raise NotImplementedError

    def advance(self, ready: Ready) -> None:
        raise NotImplementedError

    def propose(self, data: bytes, now: Micros) -> int:
        raise NotImplementedError

    def campaign(self, now: Micros) -> None:
        raise NotImplementedError
