"""The driver exempts long-lived objects from full garbage collections every
``SETTLE_GC_COMMANDS`` applied KV commands, snapshots or not (issue 8: a full collection of a
leader's log and KV history stalled its loop)."""

from __future__ import annotations

import asyncio
import gc

from consensus.kv_types import Put, encode_command
from consensus.raft import RaftConfig
from moltmesh.raft import compaction
from moltmesh.raft.driver import RaftDriver
from moltmesh.raft.wal import DiskStorage
from tests.raft.test_driver_offloop import leading


async def test_long_lived_objects_are_frozen_every_few_thousand_entries(tmp_path, monkeypatch):
    monkeypatch.setattr(compaction, "SETTLE_GC_COMMANDS", 50)
    storage = DiskStorage.open(tmp_path / "raft", fsync=False)
    d = RaftDriver("a", storage, RaftConfig.local(), lambda dst, msgs: None, bootstrap=True,
                   snapshot_entries=10**6, seed=5)  # fmt: skip
    await leading(d)
    try:
        gc.unfreeze()
        for batch in range(3):
            before = gc.get_freeze_count()
            await asyncio.gather(*(d.propose(encode_command(Put(f"k{batch}.{i}", b"v")), 10)
                                   for i in range(60)))  # fmt: skip
            assert gc.get_freeze_count() > before, batch  # 60 applied: settled once more
        assert d.compactor.taken == 0  # no snapshot was due: the settling is on its own
    finally:
        gc.unfreeze()
        await d.stop()
