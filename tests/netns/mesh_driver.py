"""A mesh node that meets its peers by mDNS alone: discovery candidates become SWIM's seeds.

    python -m tests.netns.mesh_driver --data-dir DIR --host 10.77.0.2 [--expect-peers 1]

The node's credentials must already be in ``DIR`` (``mesh init`` or a join). It starts the mesh
endpoint (``MeshService``: TLS streams and sealed gossip on one port), announces itself with
``Discovery`` (``interfaces = all``), waits until mDNS has shown ``--expect-peers`` candidates of
its mesh, then starts the SWIM driver with those candidates' endpoints as its seeds. No address
is typed anywhere: everything it joins came from mDNS, and admission is still the mesh's own
(mutual TLS against the mesh CA, sealed gossip).

This is the glue the node itself will carry once discovery is wired into ``moltmesh node``;
until then this driver lets the namespace tests and the benchmark run the real mesh layers.

Output (JSON lines, ``t`` = ``time.monotonic()``):
``discovery-started``, ``seeds {seeds}``, ``swim-started {address}``,
``swim {kind, node, t}`` for each membership event and then ``view {alive, suspect, dead,
left}`` (this node's whole view, itself excluded), ``candidate {kind, node}``, ``foreign
{node, mesh}`` (a peer of another mesh seen by mDNS),
``stopping``/``stopped``. Stdin EOF, ``stop`` or SIGTERM stop it with a graceful leave.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any

from consensus.swim_messages import MemberStatus, Meta
from moltmesh.config import DiscoveryConfig, MeshConfig
from moltmesh.discovery import Advert, Discovery, DiscoveryEventKind
from moltmesh.mesh import store
from moltmesh.mesh.service import MeshService
from moltmesh.mesh.swim_driver import PRESETS, SwimDriver
from moltmesh.mesh.wire import PROTOCOL_VERSION


def emit(event: str, **fields: Any) -> None:
    fields.setdefault("t", time.monotonic())
    print(json.dumps({"event": event, **fields}), flush=True)


def view(driver: SwimDriver, me: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {s.name.lower(): [] for s in MemberStatus}
    for member in driver.members():
        if member.node != me:
            out[member.status.name.lower()].append(member.node)
    return {k: sorted(v) for k, v in out.items()}


async def wait_stop(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        raw = await reader.readline()
        if not raw or raw.strip() == b"stop":
            break
    stop.set()


async def main(args: argparse.Namespace) -> int:
    state = store.load(args.data_dir)
    config = MeshConfig(connect_timeout_s=5.0, request_timeout_s=5.0, swim=args.preset)
    service = MeshService(args.data_dir, config, state=state)
    address = await service.start(args.host, args.port)
    port = int(address.rsplit(":", 1)[1])
    advert = Advert(state.node_id, state.mesh_id, state.ca_fingerprint, mesh_port=port,
                    api_port=0, protocol=PROTOCOL_VERSION)  # fmt: skip
    discovery = Discovery(
        advert,
        DiscoveryConfig(interfaces=["all"], probe=False),
        on_foreign=lambda peer, _: emit("foreign", node=peer.node_id, mesh=peer.mesh_id),
    )
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    stopper = asyncio.create_task(wait_stop(stop))
    await discovery.start()
    emit("discovery-started", node=state.node_id, address=address)

    found: dict[str, tuple[str, ...]] = {}
    while len(found) < args.expect_peers:
        event = await discovery.next_event()
        if event.kind is not DiscoveryEventKind.GOODBYE:
            found[event.candidate.node_id] = event.candidate.endpoints
        emit("candidate", kind=event.kind.value, node=event.candidate.node_id)
    seeds = sorted(e for endpoints in found.values() for e in endpoints)
    emit("seeds", seeds=seeds)

    driver = SwimDriver(
        service, PRESETS[args.preset](), Meta.create(address), seeds, random.Random(args.seed),
        leave_timeout_s=config.leave_timeout_s,
    )  # fmt: skip
    events = driver.subscribe()
    await driver.start()
    emit("swim-started", address=address, node=state.node_id)

    async def report_swim() -> None:
        while True:
            event = await events.get()
            emit("swim", kind=event.kind.value, node=event.node)
            emit("view", **view(driver, state.node_id))

    async def report_candidates() -> None:
        async for event in discovery.events():
            emit("candidate", kind=event.kind.value, node=event.candidate.node_id)

    tasks = [asyncio.create_task(report_swim()), asyncio.create_task(report_candidates())]
    await stop.wait()
    emit("stopping")
    await driver.stop()
    await discovery.stop()
    await service.stop()
    for task in (*tasks, stopper):
        task.cancel()
    await asyncio.gather(*tasks, stopper, return_exceptions=True)
    emit("stopped")
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--host", required=True, help="the namespace's bridge address")
    p.add_argument("--port", type=int, default=8471)
    p.add_argument("--preset", default="local", choices=sorted(PRESETS))
    p.add_argument("--expect-peers", type=int, default=0, help="candidates to wait for first")
    p.add_argument("--seed", type=int, default=0, help="SWIM's random seed")
    return p.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
