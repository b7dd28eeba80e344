"""``node.kv`` in an embedding app: the `mesh init` node founds the group alone, the KV works,
and a restart resumes from the log on disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from moltmesh.cli import main
from moltmesh.config import NodeConfig
from moltmesh.node import Node
from moltmesh.raft.kvservice import CasMismatch

pytestmark = pytest.mark.asyncio


def config_for(data_dir: Path) -> NodeConfig:
    config = NodeConfig(data_dir=data_dir)
    config.runtime.bundled_models = False
    config.mesh.host = "127.0.0.1"
    config.mesh.port = 0
    config.mesh.swim = "local"
    config.raft.timing = "local"
    config.raft.snapshot_entries = 8  # compaction runs in this test too
    return config


async def test_node_kv_bootstraps_alone_and_resumes_from_disk(tmp_path: Path):
    data = tmp_path / "n"
    assert main(["mesh", "init", "--data-dir", str(data)]) == 0
    async with Node(config_for(data), serve_api=False) as node:
        kv = node.kv
        for i in range(20):
            last = await kv.put(f"app/{i % 3}", str(i).encode())
        with pytest.raises(CasMismatch):
            await kv.cas("app/0", last.revision + 1, b"x")
        items, rev = await kv.list("app/")
        assert [i.value for i in items] == [b"18", b"19", b"17"] and rev == last.revision
        status = node.raft_ref.runtime.status()  # type: ignore[union-attr]
        assert status["voters"] == [node.node_id] and status["is_leader"]
    assert any((data / "raft" / "snap").glob("snap-*.snap"))
    async with Node(config_for(data), serve_api=False) as node:
        got, _ = await node.kv.get("app/1")
        assert got is not None and got.value == b"19"
        await node.kv.put("app/after", b"restart")


async def test_node_without_mesh_has_no_kv(tmp_path: Path):
    async with Node(config_for(tmp_path / "alone"), serve_api=False) as node:
        with pytest.raises(RuntimeError, match="mesh"):
            node.kv  # noqa: B018


async def test_raft_channels_have_their_handlers_before_the_streams_accept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A peer may send Raft frames the moment this node's streams accept (a leader's appends
    to a restarted follower): they must never be dropped for want of a handler."""
    from moltmesh.mesh.streams import MeshStreams
    from moltmesh.mesh.wire import Channel

    seen: list[set[Channel]] = []
    start = MeshStreams.start

    async def recording_start(self: MeshStreams, host: str, port: int) -> tuple[str, int]:
        seen.append(set(self.handlers))
        return await start(self, host, port)

    monkeypatch.setattr(MeshStreams, "start", recording_start)
    data = tmp_path / "n"
    assert main(["mesh", "init", "--data-dir", str(data)]) == 0
    async with Node(config_for(data), serve_api=False) as node:
        await node.kv.put("k", b"v")
    assert seen and {Channel.RAFT, Channel.KV} <= seen[0]
