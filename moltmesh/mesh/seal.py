"""Sealed UDP datagrams: AES-256-GCM under per-sender keys, with a replay window.

Datagram layout::

    header (33 bytes, authenticated as AAD) | ciphertext of the envelope | 16-byte GCM tag
    header = format (u8 = 1) | key id (u32) | sender node id (16 ASCII bytes)
             | boot epoch (u32) | counter (u64)

The sealing key of a sender is ``HKDF-SHA256(ring key, salt, info = sender node id)``, so two
senders never share a key; the 96-bit nonce is ``boot epoch || counter``. The counter starts at 0
on every boot and the boot epoch strictly grows across boots (``store.next_boot_epoch``), so a
(key, nonce) pair is never reused.

Receivers keep, per sender, the newest boot epoch seen and a sliding window of counters: a
datagram from an older epoch, or a counter already seen or older than the window, is a replay.
The window moves only after a datagram authenticates, so forged datagrams cannot shift it.

``Opener.open`` raises only ``EnvelopeError`` (with the ``DropReason``) on bad input.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from moltmesh.identity import NODE_ID_CHARS
from moltmesh.mesh.drops import DropReason
from moltmesh.mesh.keyring import KeyRing
from moltmesh.mesh.wire import MAX_DATAGRAM_BYTES, EnvelopeError

SEAL_FORMAT = 1
HEADER = struct.Struct(f"!BI{NODE_ID_CHARS}sIQ")
TAG_BYTES = 16
OVERHEAD = HEADER.size + TAG_BYTES
HKDF_SALT = b"moltmesh gossip v1"
DEFAULT_REPLAY_WINDOW = 1024  # counters; memberlist-scale bursts reorder far less than this
DERIVED_CACHE = 4096  # (key id, sender) pairs whose derived cipher is kept


def derive_sender_key(ring_key: bytes, sender: str) -> bytes:
    """The 32-byte AES key ``sender`` seals with under ``ring_key``."""
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=HKDF_SALT, info=sender.encode("ascii")
    ).derive(ring_key)


def _nonce(epoch: int, counter: int) -> bytes:
    return struct.pack("!IQ", epoch, counter)


def _valid_node_id(raw: bytes) -> bool:
    return raw.isascii() and raw.isalnum()


class _CipherCache:
    """Bounded LRU of derived AESGCM objects by (key id, sender)."""

    def __init__(self, ring: KeyRing, size: int = DERIVED_CACHE) -> None:
        self.ring = ring
        self._size = size
        self._cache: OrderedDict[tuple[int, str, bytes], AESGCM] = OrderedDict()

    def get(self, kid: int, sender: str) -> AESGCM | None:
        key = self.ring.get(kid)
        if key is None:
            return None
        entry = (kid, sender, key)
        aead = self._cache.get(entry)
        if aead is None:
            aead = AESGCM(derive_sender_key(key, sender))
            self._cache[entry] = aead
            if len(self._cache) > self._size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(entry)
        return aead


class Sealer:
    """Seals this node's outgoing datagrams with the ring's primary key."""

    def __init__(self, ring: KeyRing, node_id: str, epoch: int) -> None:
        if len(node_id) != NODE_ID_CHARS or not _valid_node_id(node_id.encode()):
            raise ValueError(f"node id must be {NODE_ID_CHARS} ASCII letters or digits")
        if not 0 <= epoch < 2**32:
            raise ValueError("boot epoch must fit in 32 bits")
        self._ciphers = _CipherCache(ring, size=8)
        self.ring = ring
        self.node_id = node_id
        self.epoch = epoch
        self.counter = 0

    def seal(self, plaintext: bytes) -> bytes:
        kid = self.ring.primary_id
        aead = self._ciphers.get(kid, self.node_id)
        assert aead is not None  # the primary key is always in the ring
        counter = self.counter
        self.counter += 1
        header = HEADER.pack(SEAL_FORMAT, kid, self.node_id.encode(), self.epoch, counter)
        return header + aead.encrypt(_nonce(self.epoch, counter), plaintext, header)


@dataclass(slots=True)
class _Window:
    epoch: int
    highest: int
    seen: int  # bit i set: counter (highest - i) was accepted


@dataclass(frozen=True, slots=True)
class Opened:
    sender: str
    key_id: int
    epoch: int
    counter: int
    plaintext: bytes


class Opener:
    """Opens datagrams sealed by any node of the mesh, refusing replays and revoked senders.

    ``revoked(node_id)`` is asked before any cryptography is done.
    """

    def __init__(
        self,
        ring: KeyRing,
        revoked: Callable[[str], bool] = lambda _node: False,
        window: int = DEFAULT_REPLAY_WINDOW,
        max_size: int = MAX_DATAGRAM_BYTES,
    ) -> None:
        if window < 1:
            raise ValueError("replay window must be at least 1")
        self.ring = ring
        self._ciphers = _CipherCache(ring)
        self._revoked = revoked
        self.window = window
        self.max_size = max_size
        self._windows: dict[str, _Window] = {}
        self.on_unknown_key: Callable[[str, int], None] | None = None
        """Told (sender, key id) of a datagram under a key id we lack (unauthenticated: a hint)."""

    def open(self, datagram: bytes) -> Opened:
        n = len(datagram)
        if n > self.max_size:
            raise EnvelopeError(DropReason.OVERSIZE, f"datagram of {n} bytes > {self.max_size}")
        if n < OVERHEAD:
            raise EnvelopeError(DropReason.GARBAGE, f"datagram of {n} bytes is too short")
        fmt, kid, raw_sender, epoch, counter = HEADER.unpack_from(datagram)
        if fmt != SEAL_FORMAT or not _valid_node_id(raw_sender):
            raise EnvelopeError(DropReason.GARBAGE, "not a sealed moltmesh datagram")
        sender = raw_sender.decode("ascii")
        if self._revoked(sender):
            raise EnvelopeError(DropReason.REVOKED, f"sender {sender} is revoked")
        if self._is_replay(sender, epoch, counter):
            raise EnvelopeError(DropReason.REPLAY, f"replayed datagram from {sender}")
        aead = self._ciphers.get(kid, sender)
        if aead is None:
            if self.on_unknown_key is not None:
                self.on_unknown_key(sender, kid)
            raise EnvelopeError(DropReason.WRONG_KEY, f"unknown key id {kid:08x}")
        header = bytes(datagram[: HEADER.size])
        try:
            plaintext = aead.decrypt(_nonce(epoch, counter), bytes(datagram[HEADER.size :]), header)
        except InvalidTag:
            raise EnvelopeError(DropReason.WRONG_KEY, "authentication failed") from None
        self._accept(sender, epoch, counter)
        return Opened(sender, kid, epoch, counter, plaintext)

    def _is_replay(self, sender: str, epoch: int, counter: int) -> bool:
        w = self._windows.get(sender)
        if w is None or epoch > w.epoch:
            return False
        if epoch < w.epoch:
            return True
        if counter > w.highest:
            return False
        age = w.highest - counter
        return age >= self.window or bool(w.seen >> age & 1)

    def _accept(self, sender: str, epoch: int, counter: int) -> None:
        w = self._windows.get(sender)
        if w is None or epoch > w.epoch:
            self._windows[sender] = _Window(epoch, counter, 1)
        elif counter > w.highest:
            shift = counter - w.highest
            mask = (1 << self.window) - 1
            w.seen = ((w.seen << shift) | 1) & mask if shift < self.window else 1
            w.highest = counter
        else:
            w.seen |= 1 << (w.highest - counter)
