"""The Raft adapter: how the simulator persists, restarts and routes a ``consensus.raft`` node.

- Disk: a ``MemoryStorage`` written only when a Ready is persisted (hard state, then entries
  with truncation). It survives a crash whole; everything else (the core, its unstable entries,
  the applied state machine) is lost, and a restarted node replays its committed log.
- App: ``RaftApp``, the applied entries in index order (the state machine the checkers read).
- Wire: ``consensus.messages.encode``/``decode``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from consensus.core import Micros, NodeId
from consensus.messages import (
    AppendEntries,
    ConfState,
    Entry,
    InstallSnapshot,
    Message,
    decode,
    encode,
)
from consensus.raft import RaftConfig, RaftNode, Ready
from consensus.storage import MemoryStorage

from .adapter import Booted, SimNode
from .errors import CoreMisbehaved

MESSAGE_OVERHEAD_BYTES = 40
"""Approximate envelope size of a Raft message, for bandwidth accounting without ``wire``."""


@dataclass(slots=True)
class RaftApp:
    """A node's applied state machine: the entries applied so far, in index order."""

    applied: list[Entry] = field(default_factory=list)

    @property
    def applied_index(self) -> int:
        """Index of the last applied entry (0 if none)."""
        return self.applied[-1].index if self.applied else 0


class RaftAdapter:
    """Adapter (``sim.adapter.Adapter``) for ``consensus.raft.RaftNode``."""

    kind = "raft"

    def __init__(self, voters: Sequence[NodeId], config: RaftConfig) -> None:
        self.voters = tuple(sorted(voters))
        self.config = config.validate()

    def new_disk(self, node_id: NodeId) -> MemoryStorage:
        return MemoryStorage(conf_state=ConfState(voters=self.voters))

    def boot(
        self, node_id: NodeId, disk: MemoryStorage, rng: random.Random, now: Micros
    ) -> Booted[RaftNode]:
        core = RaftNode(node_id, self.voters, disk, self.config, rng, now=now, applied=0)
        return Booted(core, RaftApp())

    def crash(self, node_id: NodeId, disk: MemoryStorage) -> MemoryStorage:
        return disk  # written only at persist time: exactly what was made durable

    def persist(self, node: SimNode, ready: Ready) -> None:
        disk: MemoryStorage = node.disk
        if ready.snapshot is not None:  # the Ready contract: snapshot, hard state, entries
            disk.apply_snapshot(ready.snapshot)
        if ready.hard_state is not None:
            disk.set_hard_state(ready.hard_state)
        if ready.entries:
            disk.append(ready.entries)

    def messages(self, ready: Ready) -> Sequence[Message]:
        return ready.messages

    def route(self, msg: Message) -> tuple[NodeId, NodeId]:
        return msg.src, msg.dst

    def apply(self, node: SimNode, ready: Ready, now: Micros) -> None:
        app: RaftApp = node.app
        for e in ready.committed:
            if e.index != app.applied_index + 1:
                raise CoreMisbehaved(
                    f"node {node.id} applied index {e.index} after {app.applied_index}"
                )
            app.applied.append(e)

    def advance(self, node: SimNode, ready: Ready) -> None:
        node.core.advance(ready)

    def encode(self, msg: Message) -> bytes:
        return encode(msg)

    def decode(self, data: bytes) -> Message:
        return decode(data)  # type: ignore[return-value]

    def size(self, msg: Message) -> int:
        if isinstance(msg, AppendEntries):
            return MESSAGE_OVERHEAD_BYTES + sum(len(e.data) + 16 for e in msg.entries)
        if isinstance(msg, InstallSnapshot):
            return MESSAGE_OVERHEAD_BYTES + len(msg.snapshot.data)
        return MESSAGE_OVERHEAD_BYTES
