"""Simulated KV writes grouped into Raft entries by the node driver's rule.

``sim.kv_clients`` holds the writes aimed at one node for ``KvClientSpec.batch_ms`` of virtual
time and groups them with ``consensus.kv_batch.group_commands``, the rule the node's Raft
driver applies to the commands proposed in one turn of its loop, so the simulator drives the
same entries the node writes. ``BatchStats`` counts what batching did over a run.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class BatchStats:
    """What the clients' batching did over a run (all zero when it is off)."""

    entries: int = 0
    """Entries proposed from held writes (batches and single commands alike)."""
    batch_entries: int = 0
    """Of those, ``Batch`` entries (two commands or more)."""
    batched_writes: int = 0
    """Writes proposed inside ``Batch`` entries."""
    max_batch: int = 0
    """Most writes in one entry."""
    batches_applied: int = 0
    """``Batch`` entries whose proposer applied them and handed each member its result."""
    dropped: int = 0
    """Held writes never proposed because their node crashed first."""

    def proposed(self, writes: int) -> None:
        """Count one entry proposed with ``writes`` held writes."""
        self.entries += 1
        self.max_batch = max(self.max_batch, writes)
        if writes > 1:
            self.batch_entries += 1
            self.batched_writes += writes
