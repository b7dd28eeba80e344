"""Groups that lost each other find each other again (review9 H1's lasting split, and its LOW
item: a node restarted without seeds). Part one drives SWIM cores by hand on a virtual clock;
part two starts real mesh runtimes on loopback."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterable
from pathlib import Path

import pytest

from consensus.swim import SwimCore
from consensus.swim_config import SwimConfig, local
from consensus.swim_messages import MemberState, MemberStatus, Meta, PushPull
from consensus.swim_types import Outgoing
from moltmesh.config import MeshConfig, NodeConfig
from moltmesh.identity import load_or_create_identity
from moltmesh.mesh import known_members, store
from moltmesh.mesh.join import join
from moltmesh.mesh.meta import Capability
from moltmesh.mesh.runtime import MeshRuntime
from tests.mesh.helpers import init_holder, mesh_config

S = 1_000_000


class Net:
    """SWIM cores whose address is their id, delivering every message at once (in order)
    unless ``cut`` separates the two ends. Virtual time; nothing random but the cores' rngs."""

    def __init__(self, cores: Iterable[SwimCore]) -> None:
        self.cores = {c.id: c for c in cores}
        self.now = 0
        self.cut: set[frozenset[str]] = set()
        self.pushes_to: dict[str, int] = {}
        self.pushes: list[tuple[str, str, bool]] = []  # (from, to address, join)

    def _deliver(self, src: str, out: Outgoing) -> None:
        if isinstance(out.msg, PushPull) and not out.msg.response:
            self.pushes_to[out.addr] = self.pushes_to.get(out.addr, 0) + 1
            self.pushes.append((src, out.addr, out.msg.join))
        if frozenset((src, out.addr)) in self.cut or out.addr not in self.cores:
            return
        self.cores[out.addr].step(out.msg, self.now)  # type: ignore[arg-type]

    def pump(self) -> None:
        moved = True
        while moved:
            moved = False
            for node, core in sorted(self.cores.items()):
                if core.has_ready():
                    rd = core.ready()
                    for out in [*rd.packets, *rd.streams]:
                        moved = True
                        self._deliver(node, out)

    def run_until(self, until: int) -> None:
        while True:
            due = min(d for c in self.cores.values() if (d := c.next_deadline()) is not None)
            if due > until:
                self.now = until
                return
            self.now = due
            for core in self.cores.values():
                core.tick(due)
            self.pump()

    def merged(self) -> bool:
        everyone = sorted(self.cores)
        return all(c.live_members() == everyone for c in self.cores.values())


def group(ids: str, config: SwimConfig, seed: int, seeds: dict[str, list[str]]) -> list[SwimCore]:
    """Cores that already know each other (and no one else)."""
    states = [MemberState(i, MemberStatus.ALIVE, 0, 0, Meta(i)) for i in ids]
    return [
        SwimCore(
            i,
            Meta(i),
            config,
            random.Random(f"{seed}-{i}"),
            0,
            members=states,
            seeds=seeds.get(i, ()),
        )
        for i in ids
    ]


@pytest.mark.parametrize("seed", range(5))
def test_two_groups_that_lost_each_other_merge_within_a_few_periods(seed: int) -> None:
    cfg = local()
    # "a" holds the CA (no seeds); every other node has a's address as its seed (ca_address).
    seeds = {i: ["a"] for i in "bcdef"}
    net = Net([*group("abc", cfg, seed, seeds), *group("def", cfg, seed, seeds)])
    bound = 2 * cfg.seed_retry_interval + 10 * cfg.probe_interval
    net.run_until(bound)
    assert net.merged(), f"seed={seed}: {[c.live_members() for c in net.cores.values()]}"
    assert net.pushes_to.get("a", 0) >= 1, f"seed={seed}"


def test_no_seed_retry_while_every_seed_is_a_live_member() -> None:
    cfg = local()
    net = Net(group("abc", cfg, 7, {"b": ["a"], "c": ["a", "b"]}))
    net.run_until(5 * cfg.seed_retry_interval)
    pushes = net.pushes_to
    # Only periodic push-pulls (every push_pull_interval, 2 s in local()) reach a: no seed
    # retry to an address a live member has.
    assert pushes.get("a", 0) <= 2 * (5 * cfg.seed_retry_interval // cfg.push_pull_interval + 1)
    assert net.merged()


def test_seed_retry_is_one_missing_seed_per_interval_in_turn() -> None:
    cfg = local()
    net = Net(group("ab", cfg, 3, {"a": ["s1", "s2", "b", "a"]}))  # s1, s2: nobody answers
    net.run_until(4 * cfg.seed_retry_interval)
    to_seeds = [(to, join) for src, to, join in net.pushes if to.startswith("s")]
    assert to_seeds == [("s1", True), ("s2", True), ("s1", True), ("s2", True)]  # b is live
    assert net.merged()


# -- real runtimes on loopback ----------------------------------------------------------------


async def start_runtime(data_dir: Path, seeds: list[str], port: int = 0) -> MeshRuntime:
    config = NodeConfig(
        data_dir=data_dir,
        mesh=MeshConfig(host="127.0.0.1", port=port, swim="local", seeds=seeds,
                        meta_refresh_s=3600),
    )  # fmt: skip
    runtime = MeshRuntime(config, capability=lambda: Capability("light"), api_port=8470)
    await runtime.start()
    return runtime


async def until_alive(rt: MeshRuntime, node: str, what: str) -> None:
    """Wait (on membership events) until ``rt`` counts ``node`` alive."""
    assert rt.driver is not None
    queue = rt.driver.subscribe()
    try:
        async with asyncio.timeout(20):
            while not any(m.node == node and m.status == "alive" for m in rt.members()):
                await queue.get()
    except TimeoutError:
        raise AssertionError(f"timed out: {what}") from None
    finally:
        rt.driver.unsubscribe(queue)


async def test_a_node_started_without_seeds_finds_its_mesh_through_what_it_stored(
    tmp_path: Path,
):
    holder_dir, member_dir = tmp_path / "a", tmp_path / "b"
    init_holder(holder_dir)
    a = await start_runtime(holder_dir, [])
    b: MeshRuntime | None = None
    try:
        # b joins through a's running node: the join stores a's address as ca_address.
        st = a.service.state
        token = st.tokens().create(st.ca_fingerprint, a.service.address, 600, time.time())
        await join(token, load_or_create_identity(member_dir), member_dir, mesh_config())
        assert store.load(member_dir).ca_address == a.service.address
        # No --seed, no mDNS: b reaches a through the stored ca_address.
        b = await start_runtime(member_dir, [])
        assert b.driver is not None and a.service.address in b.driver.seeds
        await until_alive(a, b.node_id, "a sees b alive")
        await until_alive(b, a.node_id, "b sees a alive")
        assert b.known is not None and a.known is not None
        b.known.save_now()
        a.known.save_now()
        assert known_members.load(holder_dir / "mesh") == [b.service.address]
        # a (the CA holder: no ca_address, no seeds) restarts on another port: it finds b
        # through its known members, b learns a's new address.
        await a.stop()
        a = await start_runtime(holder_dir, [])
        assert a.driver is not None and a.driver.seeds == [b.service.address]
        await until_alive(a, b.node_id, "restarted a sees b alive")
        await until_alive(b, a.node_id, "b sees the restarted a")
        seen = {m.node: m for m in b.members()}
        assert seen[a.node_id].address == a.service.address
    finally:
        if b is not None:
            await b.stop()
        await a.stop()


def test_startup_seeds_order_and_dedupe(tmp_path: Path) -> None:
    known_members.save(tmp_path, ["10.0.0.3:8471", "10.0.0.1:8471"])
    got = known_members.startup_seeds(["10.0.0.1:8471"], "10.0.0.2:8471", tmp_path)
    assert got == ["10.0.0.1:8471", "10.0.0.2:8471", "10.0.0.3:8471"]
    (tmp_path / known_members.FILE).write_text("not json")
    assert known_members.startup_seeds([], "", tmp_path) == []
