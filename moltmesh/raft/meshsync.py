"""Mesh state that lives in the cluster KV: the CA-signed revocation list and the mesh's
settings, so that a node that was away learns them from the replicated log (or its follow
stream) and not only from the admin broadcast.

- ``mesh/revocations``: the signed revocation list, as bytes. Whoever leads writes its own
  list there when it holds a newer one (by serial; CAS on the key's mod revision, so two leaders
  in a row never overwrite a newer list with an older one). Every node adopts the list it reads
  (``MeshService.apply_revocations`` verifies the CA signature and keeps only newer lists).
- ``mesh/config``: JSON ``{"mesh_id", "ca_fingerprint", "swim"}``, written once by the leader.

The sync runs every ``interval_s`` and never fails the node: errors are logged and retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

from consensus.raft_types import Role
from moltmesh.mesh import revocation
from moltmesh.mesh.service import MeshService
from moltmesh.raft.kvservice import CasMismatch, ClusterKv
from moltmesh.raft.tasks import cancel_and_wait

log = logging.getLogger("moltmesh.raft.meshsync")

REVOCATIONS_KEY = "mesh/revocations"
CONFIG_KEY = "mesh/config"


class MeshSync:
    def __init__(self, kv: ClusterKv, service: MeshService, swim: str,
                 interval_s: float = 1.0) -> None:  # fmt: skip
        self.kv = kv
        self.service = service
        self.swim = swim
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="raft-meshsync")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

    def _serial(self, signed: bytes | None) -> int:
        if not signed:
            return -1
        state = self.service.state
        try:
            return revocation.verify(signed, _ca_key(state), state.mesh_id).serial
        except Exception:  # an invalid list counts as none
            return -1

    async def step(self) -> None:
        """Adopt the KV's revocation list; as leader, publish ours and the mesh config."""
        state = self.service.state
        stored = self.kv.local.get(REVOCATIONS_KEY)
        if stored is not None and self._serial(stored.value) > state.revocations.serial:
            self.service.apply_revocations(stored.value)
        if self.kv.driver.node.role is not Role.LEADER:
            return
        ours = state.signed_revocations()
        if ours and self._serial(ours) > self._serial(stored.value if stored else None):
            with contextlib.suppress(CasMismatch):
                await self.kv.cas(REVOCATIONS_KEY, stored.mod_revision if stored else 0, ours)
        if self.kv.local.get(CONFIG_KEY) is None:
            doc = {"mesh_id": state.mesh_id, "ca_fingerprint": state.ca_fingerprint,
                   "swim": self.swim}  # fmt: skip
            with contextlib.suppress(CasMismatch):
                await self.kv.cas(CONFIG_KEY, 0, json.dumps(doc, sort_keys=True).encode())

    async def _run(self) -> None:
        while True:
            try:
                await self.step()
            except Exception as e:
                log.debug("mesh sync round failed: %s", e)
            await asyncio.sleep(self.interval_s)


def _ca_key(state: object):  # type: ignore[no-untyped-def]
    return state.ca_cert.public_key()  # type: ignore[attr-defined]
