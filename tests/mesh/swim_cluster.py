"""In-process mesh nodes running SWIM over real loopback sockets (helpers for the tests)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from consensus.swim_config import local
from consensus.swim_messages import MemberStatus, Meta
from moltmesh.mesh.service import MeshService
from moltmesh.mesh.store import MeshState
from moltmesh.mesh.swim_driver import SwimDriver
from tests.mesh.helpers import init_holder, join_member, mesh_config, serve

VIEW_TIMEOUT_S = 30.0


@dataclass
class SwimNode:
    state: MeshState
    service: MeshService
    driver: SwimDriver

    @property
    def node_id(self) -> str:
        return self.state.node_id

    def view(self) -> dict[str, MemberStatus]:
        return {m.node: m.status for m in self.driver.members()}

    def incarnation_of(self, node_id: str) -> int:
        return next(m.incarnation for m in self.driver.members() if m.node == node_id)


async def start_node(state: MeshState, seeds: list[str], seed: int, port: int = 0) -> SwimNode:
    service = MeshService(state.data_dir, mesh_config(), state=state)
    address = await service.start("127.0.0.1", port)
    driver = SwimDriver(
        service, local(), Meta.create(address), seeds, random.Random(seed), leave_timeout_s=5.0
    )
    await driver.start()
    return SwimNode(state, service, driver)


async def crash(node: SwimNode) -> None:
    """Stop a node the way kill -9 would: no leave, sockets gone."""
    assert node.driver._task is not None
    node.driver._task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await node.driver._task
    for task in list(node.driver._streams):
        task.cancel()
    node.driver._task = None
    await node.service.stop()


async def make_states(tmp_path: Path, n: int) -> list[MeshState]:
    holder = init_holder(tmp_path / "n0")
    temp = await serve(holder)
    states = [holder]
    try:
        for i in range(1, n):
            states.append(await join_member(temp, tmp_path / f"n{i}"))
    finally:
        await temp.streams.close()
    return states


async def start_cluster(tmp_path: Path, n: int, seed: int) -> list[SwimNode]:
    states = await make_states(tmp_path, n)
    first = await start_node(states[0], [], seed)
    nodes = [first]
    for i, st in enumerate(states[1:], start=1):
        nodes.append(await start_node(st, [first.service.address], seed + i))
    return nodes


async def wait_views(
    nodes: list[SwimNode], predicate: Callable[[], bool], what: str, seed: int
) -> None:
    """Wait on membership events until ``predicate()`` holds; fail naming ``what`` and the seed."""
    changed = asyncio.Event()
    queues = [n.driver.subscribe() for n in nodes]
    pumps = [asyncio.create_task(_pump(q, changed)) for q in queues]
    deadline = time.monotonic() + VIEW_TIMEOUT_S
    try:
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                views = {n.node_id: n.view() for n in nodes}
                raise AssertionError(f"timed out waiting for {what} (seed {seed}): {views}")
            changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(remaining, 1.0)):
                    await changed.wait()
    finally:
        for p in pumps:
            p.cancel()
        for n, q in zip(nodes, queues, strict=True):
            n.driver.unsubscribe(q)


async def _pump(queue: asyncio.Queue, changed: asyncio.Event) -> None:  # type: ignore[type-arg]
    while True:
        await queue.get()
        changed.set()


def all_see(nodes: list[SwimNode], node_id: str, status: MemberStatus) -> Callable[[], bool]:
    return lambda: all(n.view().get(node_id) == status for n in nodes if n.node_id != node_id)


def all_alive(nodes: list[SwimNode]) -> Callable[[], bool]:
    ids = {n.node_id for n in nodes}
    return lambda: all(
        {k for k, v in n.view().items() if v == MemberStatus.ALIVE} == ids for n in nodes
    )


def seeded() -> int:
    return random.randrange(2**32)
