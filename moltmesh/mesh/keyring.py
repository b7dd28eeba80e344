"""The gossip key ring: AES-256 keys by id, one of them primary.

As in Serf's keyring, rotation never interrupts gossip: *install* a new key everywhere (every node
can now open packets sealed with it), *use* it (nodes seal with it), then *remove* the old one.
Packets name the key they were sealed with by its 32-bit id, so opening never tries keys in turn.

Keys are shown to users as base64 text (``encode_key``/``decode_key``). A ring is stored as JSON
(``to_json``/``from_json``); the file holding it must be private (0600).

Authority: the mesh's ring is what the CA signs. A CA holder that changes the ring signs a
``RingStatement`` (mesh id, generation, keys, primary) with the mesh CA key; members adopt a
statement only when the signature verifies and its generation is higher than theirs
(``moltmesh.mesh.service``). ``KeyRing.generation`` is the generation of the statement the ring
was last set from (0: none yet) and ``KeyRing.signed`` that statement's bytes, kept so a member
can hand it on to one that was away. A generation read from a file without its statement (older
versions wrote one, and review9 showed a member could push it to 2**32) is not trusted: it loads
as 0 and ``KeyRing.note`` says so.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from dataclasses import dataclass

import msgpack
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

KEY_BYTES = 32  # AES-256
MAX_GENERATION = 2**32 - 1  # the wire carries generations as U32
MAX_KEYS = 64  # keys in one signed statement (a ring holds a handful during a rotation)
STATEMENT_DOMAIN = b"moltmesh key ring statement v1\0"


class KeyRingError(ValueError):
    """A key ring operation is not allowed (unknown key, removing the primary, bad key text)."""


def generate_key() -> bytes:
    """A fresh random 32-byte gossip key."""
    return os.urandom(KEY_BYTES)


def key_id(key: bytes) -> int:
    """The public 32-bit id of ``key`` (a hash; it reveals nothing usable about the key)."""
    return int.from_bytes(hashlib.sha256(b"moltmesh gossip key id\0" + key).digest()[:4], "big")


def encode_key(key: bytes) -> str:
    return base64.b64encode(key).decode("ascii")


def decode_key(text: str) -> bytes:
    """Parse a base64 key; ``KeyRingError`` unless it is exactly 32 bytes."""
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise KeyRingError("a gossip key is base64 text of 32 bytes") from None
    if len(key) != KEY_BYTES:
        raise KeyRingError(f"a gossip key is 32 bytes, this one is {len(key)}")
    return key


def format_key_id(kid: int) -> str:
    return f"{kid:08x}"


def parse_key_id(text: str) -> int:
    try:
        kid = int(text, 16)
    except ValueError:
        raise KeyRingError(f"{text!r} is not a key id (8 hex digits)") from None
    if not 0 <= kid < 2**32:
        raise KeyRingError(f"{text!r} is not a key id (8 hex digits)")
    return kid


@dataclass(frozen=True, slots=True)
class KeyInfo:
    key_id: int
    primary: bool


class KeyRing:
    """Keys by id plus the primary id. ``version`` grows with every change."""

    def __init__(self, keys: list[bytes], primary: int | None = None) -> None:
        if not keys:
            raise KeyRingError("a key ring needs at least one key")
        self._keys: dict[int, bytes] = {}
        for key in keys:
            self._add(key)
        self._primary = key_id(keys[0]) if primary is None else primary
        if self._primary not in self._keys:
            raise KeyRingError(f"primary key {format_key_id(self._primary)} is not in the ring")
        self.version = 0
        self.generation = 0
        """Generation of the CA-signed statement this ring was last set from (0: none): each
        change by a CA holder carries the next one; a member adopts only higher generations."""
        self.signed = b""
        """That statement's bytes (``RingStatement.sign``), or empty."""
        self.note = ""
        """Set by ``from_json`` when it repaired the file (an untrusted generation ignored)."""

    @classmethod
    def generate(cls) -> KeyRing:
        return cls([generate_key()])

    def _add(self, key: bytes) -> int:
        if len(key) != KEY_BYTES:
            raise KeyRingError(f"a gossip key is 32 bytes, got {len(key)}")
        kid = key_id(key)
        self._keys[kid] = bytes(key)
        return kid

    @property
    def primary_id(self) -> int:
        return self._primary

    @property
    def primary_key(self) -> bytes:
        return self._keys[self._primary]

    def get(self, kid: int) -> bytes | None:
        return self._keys.get(kid)

    def keys(self) -> list[bytes]:
        """Every key, primary first, then by id."""
        others = [self._keys[k] for k in sorted(self._keys) if k != self._primary]
        return [self.primary_key, *others]

    def list(self) -> list[KeyInfo]:
        return [KeyInfo(k, k == self._primary) for k in sorted(self._keys)]

    def install(self, key: bytes) -> int:
        """Add ``key`` (idempotent); packets sealed with it can now be opened. Returns its id."""
        kid = self._add(key)
        self.version += 1
        return kid

    def use(self, kid: int) -> None:
        """Seal outgoing packets with key ``kid`` from now on."""
        if kid not in self._keys:
            raise KeyRingError(f"key {format_key_id(kid)} is not installed")
        self._primary = kid
        self.version += 1

    def remove(self, kid: int) -> None:
        """Forget key ``kid``; the primary key cannot be removed (``use`` another first)."""
        if kid == self._primary:
            raise KeyRingError(f"key {format_key_id(kid)} is the primary key; use another first")
        if kid not in self._keys:
            raise KeyRingError(f"key {format_key_id(kid)} is not installed")
        del self._keys[kid]
        self.version += 1

    def has(self, key: bytes) -> bool:
        return self._keys.get(key_id(key)) == key

    def to_json(self) -> bytes:
        obj: dict[str, object] = {
            "primary": format_key_id(self._primary),
            "keys": [encode_key(k) for k in self.keys()],
            "generation": self.generation,
        }
        if self.signed:
            obj["signed"] = base64.b64encode(self.signed).decode("ascii")
        return json.dumps(obj, indent=1).encode()

    @classmethod
    def from_json(cls, data: bytes) -> KeyRing:
        """Parse ``to_json`` output; ``KeyRingError`` on anything else.

        The generation comes from the stored statement (``signed``). A file without one keeps
        its keys but loads with generation 0 (``note`` says what was ignored): an unsigned
        generation may have been raised by any member under older versions, even past 2**32-1.
        """
        try:
            obj = json.loads(data)
            keys = [decode_key(k) for k in obj["keys"]]
            primary = parse_key_id(obj["primary"])
            stored = obj.get("generation", 0)
            signed = base64.b64decode(obj.get("signed", ""), validate=True)
        except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as e:
            raise KeyRingError(f"not a key ring file: {e}") from None
        ring = cls(keys, primary)
        if signed:
            ring.generation = RingStatement.parse(signed)[0].generation
            ring.signed = signed
        elif stored != 0:
            ring.note = (
                f"unsigned key ring generation {stored!r} ignored (reset to 0): only a "
                "CA-signed generation is trusted"
            )
        return ring


@dataclass(frozen=True, slots=True)
class RingStatement:
    """The mesh's key ring as a CA holder set it: ``generation`` orders statements.

    Encoded as msgpack ``[mesh id, generation, [keys], primary id, signature]``; the signature is
    the CA's Ed25519 signature over ``STATEMENT_DOMAIN`` + msgpack of the first four values.
    """

    mesh_id: str
    generation: int
    keys: tuple[bytes, ...]
    primary: int

    def _payload(self) -> bytes:
        fields = [self.mesh_id, self.generation, list(self.keys), self.primary]
        return STATEMENT_DOMAIN + msgpack.packb(fields, use_bin_type=True)

    def sign(self, ca_key: Ed25519PrivateKey) -> bytes:
        """The signed bytes; ``KeyRingError`` if the statement is not one a member accepts."""
        self._check()
        fields = [self.mesh_id, self.generation, list(self.keys), self.primary]
        return msgpack.packb([*fields, ca_key.sign(self._payload())], use_bin_type=True)

    def _check(self) -> None:
        if not 1 <= self.generation <= MAX_GENERATION:
            raise KeyRingError(f"key ring generation {self.generation} out of 1..{MAX_GENERATION}")
        if not 1 <= len(self.keys) <= MAX_KEYS or any(len(k) != KEY_BYTES for k in self.keys):
            raise KeyRingError("a key ring statement holds 1..64 keys of 32 bytes")
        if self.primary not in {key_id(k) for k in self.keys}:
            raise KeyRingError("the primary key of a key ring statement is not in it")

    @classmethod
    def of(cls, ring: KeyRing, mesh_id: str, generation: int) -> RingStatement:
        return cls(mesh_id, generation, tuple(ring.keys()), ring.primary_id)

    @classmethod
    def parse(cls, data: bytes) -> tuple[RingStatement, bytes]:
        """The statement and its signature, structurally checked (not the signature)."""
        try:
            mesh, generation, keys, primary, sig = msgpack.unpackb(data, raw=False)
            ok = (
                type(mesh) is str and type(generation) is int and type(keys) is list
                and all(type(k) is bytes for k in keys) and type(primary) is int
                and type(sig) is bytes
            )  # fmt: skip
        except Exception:  # msgpack errors, wrong arity: all mean "not a statement"
            raise KeyRingError("malformed key ring statement") from None
        if not ok:
            raise KeyRingError("malformed key ring statement")
        st = cls(mesh, generation, tuple(keys), primary)
        st._check()
        return st, sig

    @classmethod
    def verify(cls, data: bytes, ca_public_key: Ed25519PublicKey, mesh_id: str) -> RingStatement:
        """Decode and check a statement signed by this mesh's CA; ``KeyRingError`` otherwise."""
        if len(data) > 2 * MAX_KEYS * KEY_BYTES + 4096:
            raise KeyRingError("key ring statement too large")
        st, sig = cls.parse(data)
        try:
            ca_public_key.verify(sig, st._payload())
        except InvalidSignature:
            raise KeyRingError("key ring statement is not signed by this mesh's CA") from None
        if st.mesh_id != mesh_id:
            raise KeyRingError(f"key ring statement of mesh {st.mesh_id!r}, not {mesh_id!r}")
        return st
