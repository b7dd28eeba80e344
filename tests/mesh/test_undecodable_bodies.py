"""Undecodable RAFT and KV bodies from members are counted (review9 M4), not silently ignored."""

from __future__ import annotations

from pathlib import Path

from consensus.raft import RaftConfig
from moltmesh.mesh.drops import DropCounters, DropReason, Transport
from moltmesh.mesh.streams import Peer
from moltmesh.mesh.wire import Channel, Envelope
from moltmesh.raft.driver import RaftDriver
from moltmesh.raft.kvservice import ClusterKv
from moltmesh.raft.proto import KvReply, KvStatus, RaftBatch, encode
from moltmesh.raft.wal import DiskStorage


async def test_undecodable_raft_and_kv_bodies_are_counted_as_garbage(tmp_path: Path) -> None:
    storage = DiskStorage.open(tmp_path / "raft", fsync=False)
    driver = RaftDriver("a", storage, RaftConfig.local(), lambda dst, msgs: None, seed=1)
    drops = DropCounters()
    kv = ClusterKv(driver, lambda d, c, b: True, lambda: ["b"], max_frame_bytes=1 << 20,
                   drops=drops)  # fmt: skip
    peer = Peer("b", "127.0.0.1:1")
    try:
        for channel, body in [
            (Channel.RAFT, b"\xff\x00not msgpack"),
            (Channel.RAFT, encode(RaftBatch((b"\x01garbage",)))),  # a batch of a bad message
            (Channel.KV, b"\xc1"),
        ]:
            env = Envelope("mesh", channel, "b", body)
            handler = kv.on_raft if channel is Channel.RAFT else kv.on_kv
            assert await handler(peer, env) is None
        assert drops.get(DropReason.GARBAGE, Transport.TCP) == 3
        # a well-formed body counts nothing
        await kv.on_kv(peer, Envelope("mesh", Channel.KV, "b", encode(KvReply(1, KvStatus.OK))))
        assert drops.get(DropReason.GARBAGE, Transport.TCP) == 3
    finally:
        await kv.stop()
