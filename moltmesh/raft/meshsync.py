"""Mesh state that lives in the cluster KV: the CA-signed revocation list and the mesh's
settings, so that a node that was away learns them from the replicated log (or its follow
stream) and not only from the admin broadcast.

- ``mesh/revocations``: the signed revocation list, as bytes. A node that holds a newer list
  than the KV's (by serial) writes it there: CAS on the key's mod revision, so two writers
  never replace a newer list with an older one (a non-leader's write is forwarded to the
  leader). Every node adopts the list it reads (``MeshService.apply_revocations`` verifies the
  CA signature and keeps only newer lists): revoked nodes' streams are dropped, their gossip
  keys retired.
- ``mesh/config``: JSON ``{"mesh_id", "ca_fingerprint", "swim"}``, written once by the leader
  (operators may add to it through the KV; it is never overwritten). A node whose own mesh id
  or CA fingerprint differs from it says so (``status()["config_mismatch"]``, a warning).

A sync round runs at once when a ``mesh/`` key changes here, and at least every
``interval_s``; it never fails the node: errors are logged and retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

from consensus.raft_types import Role
from moltmesh.logs import log_event
from moltmesh.mesh import revocation
from moltmesh.mesh.service import MeshService
from moltmesh.raft.kvservice import CasMismatch, ClusterKv
from moltmesh.raft.tasks import cancel_and_wait

log = logging.getLogger("moltmesh.raft.meshsync")

REVOCATIONS_KEY = "mesh/revocations"
CONFIG_KEY = "mesh/config"


class MeshSync:
    """See the module docstring. ``adopted``/``published`` count revocation lists adopted from
    and written to the KV by this node."""

    def __init__(self, kv: ClusterKv, service: MeshService, swim: str,
                 interval_s: float = 1.0) -> None:  # fmt: skip
        self.kv = kv
        self.service = service
        self.swim = swim
        self.interval_s = interval_s
        self.adopted = 0
        self.published = 0
        self.config: dict[str, object] | None = None
        self.config_mismatch = ""
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

    def status(self) -> dict[str, object]:
        """What this node holds and what its copy of the KV holds (``/v1/raft/status``)."""
        stored = self.kv.local.get(REVOCATIONS_KEY)
        return {
            "revocation_serial": self.service.state.revocations.serial,
            "revoked": sorted(self.service.state.revocations.revoked),
            "kv_revocation_serial": self._serial(stored.value if stored else None),
            "adopted_from_kv": self.adopted,
            "published_to_kv": self.published,
            "config": self.config,
            "config_mismatch": self.config_mismatch,
        }

    async def step(self) -> None:
        """Adopt the KV's revocation list; publish ours when newer; as leader, write the mesh
        config if absent; check the config against ours."""
        state = self.service.state
        stored = self.kv.local.get(REVOCATIONS_KEY)
        kv_serial = self._serial(stored.value if stored else None)
        if stored is not None and kv_serial > state.revocations.serial:
            self.service.apply_revocations(stored.value)
            self.adopted += 1
            log_event(log, "mesh.revocations_from_kv", serial=kv_serial)
        self._read_config()
        ours = state.signed_revocations()
        if ours and self._serial(ours) > kv_serial:
            with contextlib.suppress(CasMismatch):
                await self.kv.cas(REVOCATIONS_KEY, stored.mod_revision if stored else 0, ours)
                self.published += 1
        if self.kv.driver.node.role is Role.LEADER and self.kv.local.get(CONFIG_KEY) is None:
            doc = {"mesh_id": state.mesh_id, "ca_fingerprint": state.ca_fingerprint,
                   "swim": self.swim}  # fmt: skip
            with contextlib.suppress(CasMismatch):
                await self.kv.cas(CONFIG_KEY, 0, json.dumps(doc, sort_keys=True).encode())

    def _read_config(self) -> None:
        stored = self.kv.local.get(CONFIG_KEY)
        if stored is None:
            return
        try:
            doc = json.loads(stored.value)
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            self.config, self.config_mismatch = None, f"{CONFIG_KEY} is not a JSON object"
            return
        state = self.service.state
        wrong = [k for k, ours in (("mesh_id", state.mesh_id),
                                   ("ca_fingerprint", state.ca_fingerprint))
                 if doc.get(k) != ours]  # fmt: skip
        mismatch = f"{CONFIG_KEY} differs from this node's {', '.join(wrong)}" if wrong else ""
        if mismatch and mismatch != self.config_mismatch:
            log_event(log, "mesh.config_mismatch", keys=wrong, level=logging.WARNING)
        self.config, self.config_mismatch = doc, mismatch

    async def _run(self) -> None:
        while True:
            since = self.kv.local.revision + 1
            try:
                await self.step()
            except Exception as e:
                log.debug("mesh sync round failed: %s", e)
            try:  # wake up as soon as a mesh/ key changes here
                await self.kv.watch("mesh/", since, timeout=self.interval_s)
            except Exception:  # compacted or replaced copy: a plain pause
                await asyncio.sleep(self.interval_s)


def _ca_key(state: object):  # type: ignore[no-untyped-def]
    return state.ca_cert.public_key()  # type: ignore[attr-defined]
