"""The revocation list: node ids the mesh refuses, and gossip key ids retired with them — signed
by the CA.

Only a CA holder can revoke, so a member cannot revoke another; any member can relay the list.
A list has a serial; a node keeps the highest-serial list it has verified. ``retired_keys`` are
the ids of every gossip key the revoked nodes knew: a member that was away during the revocation
learns from the signed list alone which keys it must drop, whoever relays the list to it.

Encoded as msgpack ``[mesh id, serial, [node ids], issued µs, [retired key ids], signature]``;
the signature is the CA's Ed25519 signature over the msgpack of the first five values.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgpack
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from moltmesh.mesh.errors import RevocationError

MAX_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class RevocationList:
    mesh_id: str
    serial: int
    revoked: tuple[str, ...]
    issued_us: int
    retired_keys: tuple[int, ...] = ()

    def __contains__(self, node_id: object) -> bool:
        return node_id in self.revoked

    def _fields(self) -> list[object]:
        return [self.mesh_id, self.serial, list(self.revoked), self.issued_us,
                list(self.retired_keys)]  # fmt: skip

    def _payload(self) -> bytes:
        return msgpack.packb(self._fields())

    def sign(self, ca_key: Ed25519PrivateKey) -> bytes:
        return msgpack.packb([*self._fields(), ca_key.sign(self._payload())], use_bin_type=True)

    def adding(
        self, node_id: str, issued_us: int, retired_keys: tuple[int, ...] = ()
    ) -> RevocationList:
        """The next list: this one plus ``node_id`` and ``retired_keys``, with the next serial."""
        ids = tuple(sorted({*self.revoked, node_id}))
        keys = tuple(sorted({*self.retired_keys, *retired_keys}))
        return RevocationList(self.mesh_id, self.serial + 1, ids, issued_us, keys)


def empty(mesh_id: str) -> RevocationList:
    return RevocationList(mesh_id, 0, (), 0)


def verify(data: bytes, ca_public_key: Ed25519PublicKey, mesh_id: str) -> RevocationList:
    """Decode and check a signed list of mesh ``mesh_id``; ``RevocationError`` on anything else."""
    if len(data) > MAX_BYTES:
        raise RevocationError("revocation list too large")
    try:
        obj = msgpack.unpackb(data, raw=False)
        mesh, serial, ids, issued, keys, sig = obj
        ok = (
            type(mesh) is str and type(serial) is int and serial >= 0 and type(issued) is int
            and type(ids) is list and all(type(i) is str for i in ids) and type(sig) is bytes
            and type(keys) is list and all(type(k) is int and 0 <= k < 2**32 for k in keys)
        )  # fmt: skip
    except Exception:  # msgpack errors, wrong arity: all mean "not a list"
        raise RevocationError("malformed revocation list") from None
    if not ok:
        raise RevocationError("malformed revocation list")
    rl = RevocationList(mesh, serial, tuple(ids), issued, tuple(keys))
    try:
        ca_public_key.verify(sig, rl._payload())
    except InvalidSignature:
        raise RevocationError("revocation list is not signed by this mesh's CA") from None
    if mesh != mesh_id:
        raise RevocationError(f"revocation list of mesh {mesh!r}, not {mesh_id!r}")
    return rl
