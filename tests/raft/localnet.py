"""An in-process group: RaftDriver + ClusterKv + Autopilot per node, joined by a loopback
'network' that delivers envelopes through the same handlers the mesh streams call."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from consensus.raft import RaftConfig
from moltmesh.mesh.streams import Peer
from moltmesh.mesh.wire import Channel, Envelope
from moltmesh.raft.autopilot import Autopilot, MemberHealth
from moltmesh.raft.driver import RaftDriver
from moltmesh.raft.kvservice import ClusterKv
from moltmesh.raft.wal import DiskStorage


class LocalNode:
    def __init__(self, net: LocalNet, node_id: str, root: Path, bootstrap: bool) -> None:
        self.net = net
        self.id = node_id
        self.root = root
        self.bootstrap = bootstrap
        self.driver: RaftDriver | None = None
        self.kv: ClusterKv | None = None
        self.pilot: Autopilot | None = None

    async def start(self) -> None:
        storage = DiskStorage.open(self.root / self.id, fsync=False)
        self.driver = RaftDriver(
            self.id, storage, self.net.raft_config, lambda dst, msgs: self.kv.send_raft(dst, msgs),
            bootstrap=self.bootstrap, snapshot_entries=self.net.snapshot_entries,
            kv_retain=self.net.kv_retain,
            seed=hash(self.id) & 0xFFFF,
        )  # fmt: skip
        self.kv = ClusterKv(self.driver, self.net.sender(self.id), self.net.peers, 2.0)
        self.pilot = Autopilot(self.driver, self.net.health, stabilization_s=0.5,
                               interval_s=0.05, max_learners=self.net.max_learners)  # fmt: skip
        await self.driver.start()
        self.kv.start()
        self.pilot.start()
        self.net.up.add(self.id)

    async def stop(self) -> None:
        self.net.up.discard(self.id)
        assert self.pilot and self.kv and self.driver
        await self.pilot.stop()
        await self.kv.stop()
        await self.driver.stop()


class LocalNet:
    def __init__(self, root: Path, ids: list[str], snapshot_entries: int = 10_000,
                 max_learners: int = 2, kv_retain: int = 10_000,
                 raft_config: RaftConfig | None = None) -> None:  # fmt: skip
        self.raft_config = raft_config or RaftConfig.local()
        self.snapshot_entries = snapshot_entries
        self.max_learners = max_learners
        self.kv_retain = kv_retain
        self.up: set[str] = set()
        self.nodes = {n: LocalNode(self, n, root, i == 0) for i, n in enumerate(ids)}
        self.cut: set[frozenset[str]] = set()

    def peers(self) -> list[str]:
        return sorted(self.up)

    def health(self) -> list[MemberHealth]:
        return [
            MemberHealth(n, "alive" if n in self.up else "dead", "standard", 100.0 - i)
            for i, n in enumerate(self.nodes)
        ]

    def sender(self, src: str):
        def send(dst: str, channel: Channel, body: bytes) -> bool:
            if dst not in self.up or frozenset((src, dst)) in self.cut:
                return True  # lost on the way, as on a real network
            node = self.nodes[dst]
            env = Envelope("m", channel, src, body)
            handler = node.kv.on_raft if channel is Channel.RAFT else node.kv.on_kv
            asyncio.get_running_loop().call_soon(
                lambda: asyncio.ensure_future(handler(Peer(src, "x"), env))
            )
            return True

        return send

    async def start(self) -> None:
        for n in self.nodes.values():
            await n.start()

    async def stop(self) -> None:
        for n in self.nodes.values():
            if n.id in self.up:
                await n.stop()

    def leader(self) -> LocalNode | None:
        for n in self.nodes.values():
            if n.id in self.up and n.driver.status()["is_leader"]:
                return n
        return None


async def eventually(cond, timeout: float = 10.0, what: str = "condition") -> None:
    """Poll ``cond()`` until true (the group converges through many small events)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def three_voters_led_by_a(
    root: Path, raft_config: RaftConfig | None = None
) -> AsyncIterator[LocalNet]:
    """A started group of voters a, b and c (no learners) once a leads it; stopped on exit."""
    net = LocalNet(root, ["a", "b", "c"], max_learners=0, raft_config=raft_config)
    await net.start()
    try:
        a = net.nodes["a"]
        await eventually(lambda: len(a.driver.node.voters) == 3 and net.leader() is a, 20,
                         "3 voters, a leads")  # fmt: skip
        yield net
    finally:
        await net.stop()
