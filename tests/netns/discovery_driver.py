"""A discovery-only node: announces itself, prints what it sees as JSON lines, stops cleanly.

    python -m tests.netns.discovery_driver --node ID --mesh MESH [--interfaces all] [--no-probe]

Output lines (``t`` is ``time.monotonic()``, comparable across processes on one machine):

- ``{"event": "registering", "t"}`` just before discovery starts;
- ``{"event": "started", "node", "interfaces", "announce", "t"}`` once announced;
- ``{"event": "found" | "updated" | "goodbye", "node", "mesh", "addresses", "mesh_port",
  "api_port", "t"}`` for each candidate event (``t`` is when it was decoded);
- ``{"event": "foreign", "node", "mesh", "t"}`` when a peer of another mesh is resolved;
- ``{"event": "self-updated", "api_port", "t"}`` after an ``update API_PORT`` command;
- ``{"event": "stopping", "t"}`` / ``{"event": "stopped", "t", "stats"}`` around a clean stop;
- ``{"event": "error", "message"}`` (exit 2) when discovery cannot start.

Commands on stdin: ``update API_PORT`` re-announces with another API port; ``stop`` or end of
input or SIGTERM stops cleanly (the goodbye is sent before ``stopped`` is printed).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import signal
import sys
import time
from typing import Any

from moltmesh.config import DiscoveryConfig
from moltmesh.discovery import Advert, Discovery, DiscoveryError


def emit(event: str, **fields: Any) -> None:
    fields.setdefault("t", time.monotonic())
    print(json.dumps({"event": event, **fields}), flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--node", required=True)
    p.add_argument("--mesh", required=True)
    p.add_argument("--ca", default="sha256-test-ca")
    p.add_argument("--mesh-port", type=int, default=7946)
    p.add_argument("--api-port", type=int, default=8470)
    p.add_argument("--interfaces", default="loopback", help="comma-separated config entries")
    p.add_argument("--no-probe", action="store_true", help="skip the name-clash probe")
    return p.parse_args(argv)


async def commands(stop: asyncio.Event, discovery: Discovery) -> None:
    """Read stdin lines until EOF or ``stop``; apply ``update`` commands."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        raw = await reader.readline()
        words = raw.decode().split()
        if not raw or words == ["stop"]:
            break
        if len(words) == 2 and words[0] == "update":
            advert = dataclasses.replace(discovery.advert, api_port=int(words[1]))
            await discovery.update(advert)
            emit("self-updated", api_port=advert.api_port)
    stop.set()


async def main(args: argparse.Namespace) -> int:
    advert = Advert(args.node, args.mesh, args.ca, mesh_port=args.mesh_port,
                    api_port=args.api_port)  # fmt: skip
    config = DiscoveryConfig(interfaces=args.interfaces.split(","), probe=not args.no_probe)

    def on_foreign(peer: Advert, addresses: tuple[str, ...]) -> None:
        emit("foreign", node=peer.node_id, mesh=peer.mesh_id, addresses=list(addresses))

    discovery = Discovery(advert, config, on_foreign=on_foreign)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    emit("registering")
    try:
        await discovery.start()
    except DiscoveryError as e:
        emit("error", message=str(e))
        return 2
    assert discovery.plan is not None
    emit("started", node=advert.node_id, interfaces=list(discovery.plan.listen),
         announce=list(discovery.plan.announce))  # fmt: skip

    async def report() -> None:
        async for event in discovery.events():
            c = event.candidate
            emit(event.kind.value, node=c.node_id, mesh=c.advert.mesh_id,
                 addresses=list(c.addresses), mesh_port=c.advert.mesh_port,
                 api_port=c.advert.api_port, t=event.at)  # fmt: skip

    tasks = [asyncio.create_task(report()), asyncio.create_task(commands(stop, discovery))]
    await stop.wait()
    emit("stopping")
    await discovery.stop()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    emit("stopped", stats=dataclasses.asdict(discovery.stats))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
