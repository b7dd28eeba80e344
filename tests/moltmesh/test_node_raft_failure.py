"""A node whose Raft driver failed is not ready, says why, and ``moltmesh node`` exits non-zero.

Review9 H2: after a WAL write failed (EMFILE) the Raft loop stopped for good, while
``/v2/health/ready`` kept answering 200 and ``raft status`` showed a follower; only a restart
helped, and nothing told a supervisor to do it.
"""

from __future__ import annotations

import asyncio
import errno
import logging
from pathlib import Path

import aiohttp
import pytest

from moltmesh import cli
from moltmesh.cli import main
from moltmesh.config import NodeConfig
from moltmesh.node import Node, NodeFailed
from moltmesh.raft.driver import Unavailable
from moltmesh.raft.wal import DiskStorage


def _config(data_dir: Path) -> NodeConfig:
    config = NodeConfig(data_dir=data_dir)
    config.runtime.bundled_models = False
    config.api.port = 0
    config.mesh.host = "127.0.0.1"
    config.mesh.port = 0
    config.mesh.swim = "local"
    config.raft.timing = "local"
    config.discovery.enabled = False
    return config


async def _leading(node: Node) -> None:
    """Wait until the restarted sole voter leads again (it serves reads from then on)."""
    runtime = node.raft_ref.runtime
    assert runtime is not None
    async with asyncio.timeout(10):
        while not runtime.status()["is_leader"]:
            await runtime.driver.applied_event().wait()


def _refuse_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self, w):  # type: ignore[no-untyped-def]
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(DiskStorage, "write", refuse)


async def test_a_failed_raft_driver_makes_the_node_not_ready(tmp_path, monkeypatch, caplog):
    data = tmp_path / "n"
    assert main(["mesh", "init", "--data-dir", str(data)]) == 0
    async with Node(_config(data)) as node:
        await node.kv.put("before", b"acked")
        assert node.ready and node.failure is None and node.not_ready_reason is None
        _refuse_writes(monkeypatch)
        with caplog.at_level(logging.ERROR, logger="moltmesh"):
            with pytest.raises(Exception, match="raft stopped"):
                await node.kv.put("after", b"refused")
            failure = await asyncio.wait_for(node.wait_failed(), 10)
        assert isinstance(failure, NodeFailed) and failure.component == "raft"
        assert isinstance(failure.__cause__, OSError) and failure.__cause__.errno == errno.EMFILE
        assert node.failure is failure and not node.ready
        assert "raft failed" in str(node.not_ready_reason)
        assert any(r.getMessage() == "node.failed" and r.levelno == logging.ERROR
                   for r in caplog.records)  # fmt: skip
        auth = {"Authorization": f"Bearer {node.api_token}"}
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{node.api_url}/v2/health/ready") as r:
                assert r.status == 503
                assert "raft failed" in (await r.json())["reason"]  # says why, and what to do
            async with http.get(f"{node.api_url}/v1/raft/status", headers=auth) as r:
                assert r.status == 200
                assert "raft driver failed" in (await r.json())["failed"]
            async with http.get(f"{node.api_url}/metrics", headers=auth) as r:
                assert "moltmesh_raft_driver_failed 1.0" in await r.text()
            async with http.get(f"{node.api_url}/v1/kv/before", headers=auth) as r:
                assert r.status == 503  # linearizable reads fail at once, never hang
        with pytest.raises(Unavailable):
            await node.kv.put("later", b"x")
    monkeypatch.undo()
    async with Node(_config(data), serve_api=False) as node:  # restarted: the ack held
        await _leading(node)
        got, _ = await node.kv.get("before")
        assert got is not None and got.value == b"acked"
        assert node.ready


async def test_moltmesh_node_exits_non_zero_when_raft_fails(tmp_path, monkeypatch, capsys):
    data = tmp_path / "n"
    assert main(["mesh", "init", "--data-dir", str(data)]) == 0
    started: list[Node] = []
    enter = Node.__aenter__

    async def recording_enter(self: Node) -> Node:
        started.append(self)
        return await enter(self)

    monkeypatch.setattr(Node, "__aenter__", recording_enter)
    serving = asyncio.create_task(cli.serve(_config(data)))
    try:
        async with asyncio.timeout(30):
            while not (started and started[0].raft_ref.runtime is not None):
                await asyncio.sleep(0.01)
        node = started[0]
        await node.kv.put("k", b"v")
        _refuse_writes(monkeypatch)
        with pytest.raises(Exception, match="raft stopped"):
            await node.kv.put("k", b"w")
        code = await asyncio.wait_for(serving, 30)
    finally:
        serving.cancel()
    assert code == cli.EXIT_FAILED != 0
    assert "raft failed" in capsys.readouterr().err
    monkeypatch.undo()
    async with Node(_config(data), serve_api=False) as again:  # the data directory is free
        await _leading(again)
        got, _ = await again.kv.get("k")
        assert got is not None and got.value == b"v"
