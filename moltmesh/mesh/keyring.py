"""The gossip key ring: AES-256 keys by id, one of them primary.

As in Serf's keyring, rotation never interrupts gossip: *install* a new key everywhere (every node
can now open packets sealed with it), *use* it (nodes seal with it), then *remove* the old one.
Packets name the key they were sealed with by its 32-bit id, so opening never tries keys in turn.

Keys are shown to users as base64 text (``encode_key``/``decode_key``). A ring is stored as JSON
(``to_json``/``from_json``); the file holding it must be private (0600).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from dataclasses import dataclass

KEY_BYTES = 32  # AES-256


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
        """Mesh-wide order of key ring changes: each change started anywhere carries the next
        generation, and a member that missed some adopts a ring of a higher generation."""

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

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "primary": format_key_id(self._primary),
                "keys": [encode_key(k) for k in self.keys()],
                "generation": self.generation,
            },
            indent=1,
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> KeyRing:
        """Parse ``to_json`` output; ``KeyRingError`` on anything else."""
        try:
            obj = json.loads(data)
            keys = [decode_key(k) for k in obj["keys"]]
            primary = parse_key_id(obj["primary"])
            generation = int(obj.get("generation", 0))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise KeyRingError(f"not a key ring file: {e}") from None
        ring = cls(keys, primary)
        ring.generation = generation
        return ring
