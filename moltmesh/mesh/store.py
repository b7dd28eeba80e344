"""Mesh credentials on disk, in ``<data dir>/mesh/`` (directory 0700, every file 0600).

    mesh.json       mesh id and CA fingerprint
    ca.crt          the mesh CA certificate (every member)
    ca.key          the CA private key (only where ``mesh init`` or ``mesh ca import`` put it)
    node.crt        this node's certificate (its key is the node identity key, ``node.key``)
    keyring.json    the gossip key ring
    revoked.bin     the CA-signed revocation list
    tokens.json     join tokens issued here (hashed secrets; CA holders only)
    boot-epoch      the last boot epoch used to seal datagrams

Writes are atomic (``identity.write_private``). ``MeshState`` is what a running node holds.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from moltmesh.identity import KEY_FILE, Identity, ensure_data_dir, write_private
from moltmesh.mesh import ca, revocation
from moltmesh.mesh.errors import CertificateError, CredentialError, RevocationError
from moltmesh.mesh.keyring import KeyRing, KeyRingError
from moltmesh.mesh.revocation import RevocationList
from moltmesh.mesh.tokens import TokenStore

MESH_DIR = "mesh"


def mesh_dir(data_dir: Path) -> Path:
    return data_dir / MESH_DIR


def new_mesh_id() -> str:
    return base64.b32encode(os.urandom(10)).decode("ascii").lower()


def has_mesh(data_dir: Path) -> bool:
    return (mesh_dir(data_dir) / "mesh.json").exists()


@dataclass
class MeshState:
    """The credentials of one member. ``ca_key`` is set only on CA holders."""

    data_dir: Path
    mesh_id: str
    ca_cert: x509.Certificate
    node_cert: x509.Certificate
    keyring: KeyRing
    revocations: RevocationList
    ca_key: Ed25519PrivateKey | None = None
    ca_address: str = ""  # where a CA holder was reached (the join token's address)

    @property
    def dir(self) -> Path:
        return mesh_dir(self.data_dir)

    @property
    def ca_fingerprint(self) -> str:
        return ca.fingerprint(self.ca_cert)

    def __post_init__(self) -> None:
        self._node_id = ca.node_id_of(self.node_cert)

    @property
    def node_id(self) -> str:
        """The node id in our certificate (checked against its key once, when loaded)."""
        return self._node_id

    @property
    def node_cert_path(self) -> Path:
        return self.dir / "node.crt"

    @property
    def node_key_path(self) -> Path:
        return self.data_dir / KEY_FILE

    @property
    def ca_cert_path(self) -> Path:
        return self.dir / "ca.crt"

    def tokens(self) -> TokenStore:
        return TokenStore(self.dir / "tokens.json")

    def is_revoked(self, node_id: str) -> bool:
        return node_id in self.revocations

    def save_node_cert(self, cert: x509.Certificate) -> None:
        node_id = ca.node_id_of(cert)
        if node_id != self._node_id:
            raise CertificateError(f"a certificate for {node_id} cannot replace {self._node_id}'s")
        write_private(self.node_cert_path, ca.cert_pem(cert))
        self.node_cert = cert

    def save_keyring(self) -> None:
        write_private(self.dir / "keyring.json", self.keyring.to_json())

    def save_revocations(self, signed: bytes) -> RevocationList:
        """Verify ``signed`` and keep it if newer than ours; returns the list now in force."""
        rl = revocation.verify(signed, _ed_key(self.ca_cert), self.mesh_id)
        if rl.serial > self.revocations.serial:
            write_private(self.dir / "revoked.bin", signed)
            self.revocations = rl
        return self.revocations

    def signed_revocations(self) -> bytes | None:
        path = self.dir / "revoked.bin"
        return path.read_bytes() if path.exists() else None


def _ed_key(cert: x509.Certificate) -> Ed25519PublicKey:
    key = cert.public_key()
    if not isinstance(key, Ed25519PublicKey):
        raise CertificateError("the mesh CA key must be Ed25519")
    return key


def _write_meta(d: Path, mesh_id: str, ca_cert: x509.Certificate, ca_address: str = "") -> None:
    meta = {"mesh_id": mesh_id, "ca_fingerprint": ca.fingerprint(ca_cert), "ca_address": ca_address}
    write_private(d / "mesh.json", json.dumps(meta, indent=1).encode())


def _prepare_dir(data_dir: Path) -> Path:
    ensure_data_dir(data_dir)
    d = mesh_dir(data_dir)
    d.mkdir(mode=0o700, exist_ok=True)
    return d


def init_mesh(
    data_dir: Path,
    identity: Identity,
    lifetime: dt.timedelta,
    backdate: dt.timedelta,
    now: dt.datetime,
) -> MeshState:
    """Create a new mesh here: CA, this node's certificate, a key ring. Refuses to overwrite."""
    if has_mesh(data_dir):
        raise CredentialError(f"{mesh_dir(data_dir)} already holds a mesh; refusing to replace it")
    d = _prepare_dir(data_dir)
    mesh_id = new_mesh_id()
    ca_key, ca_cert = ca.create_ca(mesh_id, now)
    cert = ca.issue_node_cert(
        ca_key, ca_cert, mesh_id, identity.private_key.public_key(), now, lifetime, backdate
    )
    write_private(d / "ca.key", ca.key_pem(ca_key))
    write_private(d / "ca.crt", ca.cert_pem(ca_cert))
    write_private(d / "node.crt", ca.cert_pem(cert))
    ring = KeyRing.generate()
    write_private(d / "keyring.json", ring.to_json())
    _write_meta(d, mesh_id, ca_cert)
    return MeshState(data_dir, mesh_id, ca_cert, cert, ring, revocation.empty(mesh_id), ca_key)


def store_joined(
    data_dir: Path,
    mesh_id: str,
    ca_cert: x509.Certificate,
    node_cert: x509.Certificate,
    ring: KeyRing,
    signed_revocations: bytes | None,
    ca_address: str = "",
    rejoin: bool = False,
) -> MeshState:
    """Persist what a successful join returned.

    Refuses a data directory that already belongs to a mesh, unless ``rejoin`` and it is the
    same mesh (a member whose certificate expired while it was away joins again with a token:
    its certificate, key ring and revocations are replaced; a CA key it holds is kept).
    """
    if has_mesh(data_dir):
        existing = json.loads((mesh_dir(data_dir) / "mesh.json").read_bytes())
        if not rejoin or existing.get("ca_fingerprint") != ca.fingerprint(ca_cert):
            raise CredentialError(
                f"{mesh_dir(data_dir)} already holds a mesh; refusing to replace it"
            )
    d = _prepare_dir(data_dir)
    write_private(d / "ca.crt", ca.cert_pem(ca_cert))
    write_private(d / "node.crt", ca.cert_pem(node_cert))
    write_private(d / "keyring.json", ring.to_json())
    state = MeshState(data_dir, mesh_id, ca_cert, node_cert, ring, revocation.empty(mesh_id))
    state.ca_address = ca_address
    if (d / "ca.key").exists():
        state.ca_key = ca.load_ca_key((d / "ca.key").read_bytes())
    if signed_revocations:
        state.save_revocations(signed_revocations)
    _write_meta(d, mesh_id, ca_cert, ca_address)  # last: its presence means "a member of a mesh"
    return state


def load(data_dir: Path) -> MeshState:
    """Load this node's mesh credentials; ``CredentialError`` names a missing or bad file."""
    d = mesh_dir(data_dir)
    if not has_mesh(data_dir):
        raise CredentialError(
            f"no mesh credentials in {d}: run `moltmesh mesh init` or join with --token"
        )

    def read(name: str) -> bytes:
        try:
            return (d / name).read_bytes()
        except OSError as e:
            raise CredentialError(f"cannot read {d / name}: {e.strerror}") from None

    try:
        meta = json.loads(read("mesh.json"))
        mesh_id = str(meta["mesh_id"])
        ca_cert = ca.load_cert(read("ca.crt"))
        node_cert = ca.load_cert(read("node.crt"))
        ring = KeyRing.from_json(read("keyring.json"))
        ca_key = ca.load_ca_key(read("ca.key")) if (d / "ca.key").exists() else None
    except (ValueError, KeyError, CertificateError, KeyRingError) as e:
        raise CredentialError(f"mesh credentials in {d} are unusable: {e}") from None
    if meta.get("ca_fingerprint") != ca.fingerprint(ca_cert):
        raise CredentialError(f"{d / 'ca.crt'} does not match the mesh's CA fingerprint")
    state = MeshState(
        data_dir, mesh_id, ca_cert, node_cert, ring, revocation.empty(mesh_id), ca_key,
        str(meta.get("ca_address") or ""),
    )  # fmt: skip
    signed = state.signed_revocations()
    if signed is not None:
        try:
            state.revocations = revocation.verify(signed, _ed_key(ca_cert), mesh_id)
        except RevocationError as e:
            raise CredentialError(f"{d / 'revoked.bin'}: {e}") from None
    return state


def import_ca(data_dir: Path, cert_data: bytes, key_data: bytes) -> MeshState:
    """Make this member a CA holder: install the CA key, which must match our mesh's CA."""
    state = load(data_dir)
    cert, key = ca.load_cert(cert_data), ca.load_ca_key(key_data)
    if ca.fingerprint(cert) != state.ca_fingerprint:
        raise CertificateError("that CA certificate is not this mesh's CA")
    if ca.raw_public_key(key.public_key()) != ca.raw_public_key(_ed_key(cert)):
        raise CertificateError("that key does not belong to the mesh's CA certificate")
    write_private(state.dir / "ca.key", ca.key_pem(key))
    state.ca_key = key
    return state


def next_boot_epoch(data_dir: Path, now_s: float) -> int:
    """A boot epoch greater than any used before here (and than the clock), then recorded."""
    path = mesh_dir(data_dir) / "boot-epoch"
    last = 0
    with contextlib.suppress(OSError, ValueError):
        last = int(path.read_text(encoding="ascii").strip())
    epoch = max(last + 1, int(now_s))
    if epoch >= 2**32:
        raise CredentialError("boot epoch exhausted (32 bits); the clock is far in the future")
    write_private(path, f"{epoch}\n".encode("ascii"))
    return epoch
