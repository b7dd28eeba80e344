"""Peers found by mDNS become SWIM join attempts: the glue between discovery and membership.

``DiscoveredPeers`` announces this node (``moltmesh.discovery``) and, for every candidate of our
mesh that SWIM does not already count as alive, asks the SWIM driver to push-pull with its
endpoints. A candidate is only a hint: the push-pull travels over mutual TLS, so a device without
the mesh's credentials never becomes a member whatever it announces. mDNS never reports a cut
link; liveness stays SWIM's job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from consensus.swim_messages import MemberStatus
from moltmesh.config import DiscoveryConfig
from moltmesh.discovery import Advert, Discovery, DiscoveryCollector, DiscoveryEventKind
from moltmesh.logs import log_event
from moltmesh.mesh import wire
from moltmesh.mesh.swim_driver import SwimDriver

log = logging.getLogger("moltmesh.mesh.discovered")


class DiscoveredPeers:
    """Runs discovery for one mesh member and feeds its candidates to SWIM. One event loop."""

    def __init__(self, advert: Advert, config: DiscoveryConfig, driver: SwimDriver) -> None:
        self.discovery = Discovery(advert, config)
        self._driver = driver
        self._task: asyncio.Task[None] | None = None
        self.joins = 0  # join attempts made for discovered candidates

    def collector(self) -> DiscoveryCollector:
        return DiscoveryCollector(self.discovery)

    async def start(self) -> None:
        await self.discovery.start()
        self._task = asyncio.create_task(self._forward(), name="discovered-peers")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.discovery.stop()

    async def _forward(self) -> None:
        async for event in self.discovery.events():
            if event.kind is DiscoveryEventKind.GOODBYE:
                continue
            candidate = event.candidate
            member = next((m for m in self._driver.members() if m.node == candidate.node_id), None)
            if member is not None and member.status is MemberStatus.ALIVE:
                continue
            self.joins += 1
            log_event(log, "discovery.join", node=candidate.node_id, at=list(candidate.endpoints))
            self._driver.join(list(candidate.endpoints))


def advert_for(node_id: str, mesh_id: str, ca_fingerprint: str, mesh_address: str,
               api_port: int | None) -> Advert:  # fmt: skip
    """What this member announces: its ids, the CA fingerprint and its mesh port."""
    return Advert(
        node_id, mesh_id, ca_fingerprint, mesh_port=int(mesh_address.rsplit(":", 1)[1]),
        api_port=api_port or 0, protocol=wire.PROTOCOL_VERSION,
    )  # fmt: skip
