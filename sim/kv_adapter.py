"""The simulator adapter for a Raft group whose state machine is the replicated KV.

Like ``sim.raft_adapter`` (disk = ``MemoryStorage`` written only when a Ready is persisted; a
crash keeps the disk and loses the core, unpersisted entries and the applied state), plus:

- **State machine**: ``KvApp`` holds a ``consensus.kv.KvStore``; every committed entry is
  applied to it and its result is handed to observers (``last_applied``): one ``KvResult`` for
  a command, ``Batched`` (its commands' results in order, all at the entry's index) for a
  ``Batch`` entry, ``None`` for an entry that is not a command.
- **Snapshots** (the driver's side of DESIGN §3 / ``consensus.storage``): a Ready's snapshot is
  persisted first (``apply_snapshot``) and replaces the store (``KvStore.restore``); after
  ``advance`` a node whose applied index is ``snapshot_every`` past its last snapshot serialises
  the store, records the snapshot and compacts its log, keeping ``snapshot_keep`` entries for
  followers that lag a little. A restarted node restores its store from the disk's snapshot and
  boots with ``applied`` at its index.
- **Membership**: every node is given the same founding voters; nodes outside them start empty
  and wait for a leader to add them (``consensus.raft.RaftNode``).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from consensus.core import Micros, NodeId
from consensus.kv import Batched, KvResult, KvStore
from consensus.messages import Entry
from consensus.raft import RaftConfig, RaftNode, Ready
from consensus.storage import MemoryStorage

from .adapter import Booted, SimNode
from .errors import CoreMisbehaved
from .raft_adapter import RaftAdapter


@dataclass(slots=True)
class KvApp:
    """A node's applied state: the KV store and what the last Ready applied."""

    store: KvStore
    last_applied: list[tuple[Entry, KvResult | Batched | None]] = field(default_factory=list)
    """(entry, result) of each entry the last Ready applied, for observers."""
    restored_from: int = 0
    """Index of the last snapshot the store was restored from (0: never)."""

    @property
    def applied_index(self) -> int:
        return self.store.applied_index


@dataclass(slots=True)
class SnapshotStats:
    """Counters over a run."""

    taken: int = 0
    installed: int = 0


class KvAdapter(RaftAdapter):
    """Adapter (``sim.adapter.Adapter``) for ``RaftNode`` + ``KvStore``; module docstring."""

    kind = "raft-kv"

    def __init__(
        self,
        voters: Sequence[NodeId],
        config: RaftConfig,
        *,
        snapshot_every: int = 0,
        snapshot_keep: int = 0,
        retain: int = 1_000,
    ) -> None:
        """``snapshot_every`` 0 disables snapshots; ``retain`` is the store's history."""
        super().__init__(voters, config)
        self.snapshot_every = snapshot_every
        self.snapshot_keep = snapshot_keep
        self.retain = retain
        self.stats = SnapshotStats()

    def new_disk(self, node_id: NodeId) -> MemoryStorage:
        return MemoryStorage()

    def boot(
        self, node_id: NodeId, disk: MemoryStorage, rng: random.Random, now: Micros
    ) -> Booted[RaftNode]:
        store = KvStore(self.retain)
        applied = 0
        if disk.snapshot_index() > 0:
            snap = disk.snapshot()
            store = KvStore.restore(snap.data)
            applied = snap.meta.index
        core = RaftNode(node_id, self.voters, disk, self.config, rng, now=now, applied=applied)
        return Booted(core, KvApp(store, restored_from=applied))

    def apply(self, node: SimNode, ready: Ready, now: Micros) -> None:
        app: KvApp = node.app
        app.last_applied = []
        if ready.snapshot is not None:
            meta = ready.snapshot.meta
            app.store = KvStore.restore(ready.snapshot.data)
            app.restored_from = meta.index
            self.stats.installed += 1
            if app.store.applied_index != meta.index:
                raise CoreMisbehaved(
                    f"node {node.id}: snapshot at {meta.index} holds a store at "
                    f"{app.store.applied_index}"
                )
        for e in ready.committed:
            if e.index != app.store.applied_index + 1:
                raise CoreMisbehaved(
                    f"node {node.id} applied index {e.index} after {app.store.applied_index}"
                )
            app.last_applied.append((e, app.store.apply_entry(e)))

    def advance(self, node: SimNode, ready: Ready) -> None:
        core: RaftNode = node.core
        core.advance(ready)
        if self.snapshot_every <= 0:
            return
        disk: MemoryStorage = node.disk
        applied = core.applied_index
        if applied - disk.snapshot_index() < self.snapshot_every:
            return
        app: KvApp = node.app
        disk.create_snapshot(applied, core.conf_state, app.store.snapshot())
        disk.compact(max(applied - self.snapshot_keep, disk.first_index() - 1))
        self.stats.taken += 1
