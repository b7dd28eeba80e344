"""The addresses of members last seen alive, kept on disk so a restarted node can find its mesh.

A node restarted without ``mesh.seeds`` and without mDNS would otherwise start alone and stay so
(nobody pushes to a node nobody remembers). ``startup_seeds`` gives SWIM, besides the configured
seeds, the CA holder's address stored at join (``MeshState.ca_address``) and the addresses in
``<mesh dir>/known-members.json`` (written by ``KnownMembers`` while the node runs), as Serf
rejoins the members of its snapshot. A seed is only a hint: a push-pull to it travels over
mutual TLS, so a stale or foreign address costs one failed connection attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from pathlib import Path

from consensus.swim_messages import MemberStatus
from moltmesh.identity import write_private
from moltmesh.logs import log_event
from moltmesh.mesh.swim_driver import SwimDriver

log = logging.getLogger("moltmesh.mesh.known")

FILE = "known-members.json"
MAX_KNOWN = 16
"""Addresses remembered (sorted; the first ones): seeds are pushed to at once on start."""
SAVE_EVERY_S = 2.0
"""Membership events are coalesced: at most one write per this many seconds."""


def load(mesh_dir: Path) -> list[str]:
    """The remembered addresses (empty when none or unreadable)."""
    try:
        doc = json.loads((mesh_dir / FILE).read_bytes())
    except (OSError, ValueError):
        return []
    raw = doc.get("addresses") if isinstance(doc, dict) else None
    return [a for a in raw if isinstance(a, str) and a][:MAX_KNOWN] if isinstance(raw, list) else []


def save(mesh_dir: Path, addresses: list[str]) -> None:
    write_private(mesh_dir / FILE, json.dumps({"addresses": addresses[:MAX_KNOWN]}).encode())


def startup_seeds(configured: list[str], ca_address: str, mesh_dir: Path) -> list[str]:
    """Configured seeds first, then the CA holder's address, then the remembered members (no
    duplicates; the SWIM driver drops our own address)."""
    out: list[str] = []
    for addr in [*configured, ca_address, *load(mesh_dir)]:
        if addr and addr not in out:
            out.append(addr)
    return out


class KnownMembers:
    """Writes the addresses of the live members (self excluded) when membership changes. An
    empty set is never written: being alone is exactly when the old addresses are needed."""

    def __init__(self, mesh_dir: Path, driver: SwimDriver, self_id: Callable[[], str]) -> None:
        self.mesh_dir = mesh_dir
        self._driver = driver
        self._self_id = self_id
        self._saved = load(mesh_dir)
        self._task: asyncio.Task[None] | None = None

    def current(self) -> list[str]:
        me = self._self_id()
        live = (MemberStatus.ALIVE, MemberStatus.SUSPECT)
        return sorted(
            {m.meta.address for m in self._driver.members()
             if m.node != me and m.status in live and m.meta.address}
        )[:MAX_KNOWN]  # fmt: skip

    def save_now(self) -> bool:
        """Write the current addresses if they changed and are not empty; True when written."""
        addresses = self.current()
        if not addresses or addresses == self._saved:
            return False
        try:
            save(self.mesh_dir, addresses)
        except OSError as e:
            log_event(log, "mesh.known_members_not_saved", error=str(e), level=logging.WARNING)
            return False
        self._saved = addresses
        return True

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="known-members")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.save_now()

    async def _run(self) -> None:
        queue = self._driver.subscribe()
        try:
            while True:
                await queue.get()
                self.save_now()
                await asyncio.sleep(SAVE_EVERY_S)  # coalesce a burst (a cluster booting)
                while not queue.empty():
                    queue.get_nowait()
                self.save_now()
        finally:
            self._driver.unsubscribe(queue)
