"""Sealed UDP datagrams: AES-256-GCM under per-sender keys, with a replay window.

Datagram layout::

    header (33 bytes, authenticated as AAD) | ciphertext of the envelope | 16-byte GCM tag
    header = format (u8 = 1) | key id (u32) | sender node id (16 ASCII bytes)
             | boot epoch (u32) | counter (u64)

The sealing key of a sender is ``HKDF-SHA256(ring key, salt, info = sender node id)``, so two
senders never share a key; the 96-bit nonce is ``boot epoch || counter``. The counter starts at 0
on every boot and the boot epoch strictly grows across boots (``store.next_boot_epoch``), so a
(key, nonce) pair is never reused.

Receivers keep, per sender, a sliding window of counters for each of up to ``EPOCHS_KEPT`` boot
epochs: a counter already seen or older than its window is a replay. An epoch not kept takes a
free slot whatever its value (so a forged epoch seen first cannot shut out the real one; the
price: a datagram of an older boot, never seen here, is accepted once while slots are free);
once the slots are full, only an epoch newer than all seen is accepted, at most one per
``NEW_EPOCH_INTERVAL_S``, in the least recently used slot. Windows move only after a datagram
authenticates, so forged datagrams cannot shift them. A boot epoch later than our clock plus
``MAX_EPOCH_SKEW_S`` is dropped before any cryptography (review9: one datagram of epoch 2**32-1,
sealed by a holder of the ring key, made every real datagram of its sender a "replay" until the
receiver restarted; counted as ``replay`` until ``DropReason`` has a reason of its own).
A key holder can still introduce plausible epochs, but the sender's own epoch keeps its slot
while it keeps sending, so that no longer silences it.

Derived keys are cached per (key id, sender). Senders that have authenticated at least once stay
in the main cache, which only other authenticated senders can evict; a sender never seen yet
costs a derivation only within a token bucket (``UNSEEN_DERIVATIONS_PER_S``) and waits in a small
probation cache, so a flood of forged sender ids (review9 M6) neither burns a core on HKDF nor
evicts the members. The header does not name the receiver (review9 M1: a datagram captured on its
way to one member can be replayed once to another); naming it needs a new seal format.

``Opener.open`` raises only ``EnvelopeError`` (with the ``DropReason``) on bad input.
"""

from __future__ import annotations

import struct
import time
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
DERIVED_CACHE = 4096  # (key id, sender) pairs of authenticated senders whose cipher is kept
PROBATION_CACHE = 256  # ciphers derived for senders not authenticated yet
UNSEEN_DERIVATIONS_PER_S = 200.0  # derivations for not-yet-authenticated senders (token rate)
UNSEEN_DERIVATIONS_BURST = 200.0
MAX_EPOCH_SKEW_S = 300  # a boot epoch may be this far ahead of our clock (clocks differ)
EPOCHS_KEPT = 4  # replay windows kept per sender (its current boot, and room for a few more)
NEW_EPOCH_INTERVAL_S = 10.0  # once its slots are full, a sender's next new epoch waits this long


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
    """Derived AESGCM objects by (key id, sender, key): an LRU of authenticated senders
    (``promote``) that only authenticated senders evict, and a small probation LRU for the
    others. ``derivations`` counts HKDF derivations done."""

    def __init__(self, size: int = DERIVED_CACHE, probation: int = PROBATION_CACHE) -> None:
        self._size = size
        self._probation_size = probation
        self._known: OrderedDict[tuple[int, str, bytes], AESGCM] = OrderedDict()
        self._probation: OrderedDict[tuple[int, str, bytes], AESGCM] = OrderedDict()
        self.derivations = 0

    def known(self, entry: tuple[int, str, bytes]) -> AESGCM | None:
        aead = self._known.get(entry)
        if aead is not None:
            self._known.move_to_end(entry)
        return aead

    def on_probation(self, entry: tuple[int, str, bytes]) -> AESGCM | None:
        return self._probation.get(entry)

    def derive(self, entry: tuple[int, str, bytes], trusted: bool) -> AESGCM:
        """Derive ``entry``'s cipher and keep it (trusted: in the main cache)."""
        _kid, sender, key = entry
        aead = AESGCM(derive_sender_key(key, sender))
        self.derivations += 1
        cache, size = (
            (self._known, self._size) if trusted else (self._probation, self._probation_size)
        )
        cache[entry] = aead
        if len(cache) > size:
            cache.popitem(last=False)
        return aead

    def promote(self, entry: tuple[int, str, bytes]) -> None:
        """``entry``'s sender authenticated: move its cipher to the main cache."""
        aead = self._probation.pop(entry, None)
        if aead is not None:
            self._known[entry] = aead
            if len(self._known) > self._size:
                self._known.popitem(last=False)


class _Bucket:
    """A token bucket: ``take(now)`` is True while tokens remain (refilled at ``rate``/s)."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._at: float | None = None

    def take(self, now: float) -> bool:
        if self._at is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


class Sealer:
    """Seals this node's outgoing datagrams with the ring's primary key."""

    def __init__(self, ring: KeyRing, node_id: str, epoch: int) -> None:
        if len(node_id) != NODE_ID_CHARS or not _valid_node_id(node_id.encode()):
            raise ValueError(f"node id must be {NODE_ID_CHARS} ASCII letters or digits")
        if not 0 <= epoch < 2**32:
            raise ValueError("boot epoch must fit in 32 bits")
        self._ciphers = _CipherCache(size=8, probation=0)
        self.ring = ring
        self.node_id = node_id
        self.epoch = epoch
        self.counter = 0

    def seal(self, plaintext: bytes) -> bytes:
        kid = self.ring.primary_id
        entry = (kid, self.node_id, self.ring.primary_key)
        aead = self._ciphers.known(entry) or self._ciphers.derive(entry, trusted=True)
        counter = self.counter
        self.counter += 1
        header = HEADER.pack(SEAL_FORMAT, kid, self.node_id.encode(), self.epoch, counter)
        return header + aead.encrypt(_nonce(self.epoch, counter), plaintext, header)


@dataclass(slots=True)
class _Window:
    epoch: int
    highest: int
    seen: int  # bit i set: counter (highest - i) was accepted
    used: float  # monotonic time of the last datagram accepted in it


@dataclass(slots=True)
class _SenderWindows:
    windows: list[_Window]  # at most EPOCHS_KEPT, any order
    newest: int  # the highest epoch ever accepted from this sender
    admitted: float  # monotonic time the last new epoch was accepted

    def find(self, epoch: int) -> _Window | None:
        for w in self.windows:
            if w.epoch == epoch:
                return w
        return None


@dataclass(frozen=True, slots=True)
class Opened:
    sender: str
    key_id: int
    epoch: int
    counter: int
    plaintext: bytes


class Opener:
    """Opens datagrams sealed by any node of the mesh, refusing replays and revoked senders.

    ``revoked(node_id)`` is asked before any cryptography is done. ``clock`` (wall, seconds)
    bounds boot epochs; ``monotonic`` paces derivations and new epochs (both injectable for
    tests).
    """

    def __init__(
        self,
        ring: KeyRing,
        revoked: Callable[[str], bool] = lambda _node: False,
        window: int = DEFAULT_REPLAY_WINDOW,
        max_size: int = MAX_DATAGRAM_BYTES,
        max_epoch_skew_s: float = MAX_EPOCH_SKEW_S,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if window < 1:
            raise ValueError("replay window must be at least 1")
        self.ring = ring
        self._ciphers = _CipherCache()
        self._unseen = _Bucket(UNSEEN_DERIVATIONS_PER_S, UNSEEN_DERIVATIONS_BURST)
        self._revoked = revoked
        self.window = window
        self.max_size = max_size
        self.max_epoch_skew_s = max_epoch_skew_s
        self._clock = clock
        self._monotonic = monotonic
        self._senders: dict[str, _SenderWindows] = {}
        self.on_unknown_key: Callable[[str, int], None] | None = None
        """Told (sender, key id) of a datagram under a key id we lack (unauthenticated: a hint)."""

    @property
    def derivations(self) -> int:
        """Key derivations done so far (for tests and benchmarks)."""
        return self._ciphers.derivations

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
        if epoch > self._clock() + self.max_epoch_skew_s:  # it would shut out real datagrams
            why = f"boot epoch {epoch} of {sender} is over {self.max_epoch_skew_s:.0f} s ahead"
            raise EnvelopeError(DropReason.FUTURE_EPOCH, why)
        now = self._monotonic()
        if self._is_replay(sender, epoch, counter, now):
            raise EnvelopeError(DropReason.REPLAY, f"replayed datagram from {sender}")
        key = self.ring.get(kid)
        if key is None:
            if self.on_unknown_key is not None:
                self.on_unknown_key(sender, kid)
            raise EnvelopeError(DropReason.WRONG_KEY, f"unknown key id {kid:08x}")
        entry = (kid, sender, key)
        aead = self._ciphers.known(entry) or self._ciphers.on_probation(entry)
        if aead is None:
            if not self._unseen.take(now):
                raise EnvelopeError(DropReason.WRONG_KEY, "key derivations for unseen senders "
                                    "are over their rate")  # fmt: skip
            aead = self._ciphers.derive(entry, trusted=False)
        header = bytes(datagram[: HEADER.size])
        try:
            plaintext = aead.decrypt(_nonce(epoch, counter), bytes(datagram[HEADER.size :]), header)
        except InvalidTag:
            raise EnvelopeError(DropReason.WRONG_KEY, "authentication failed") from None
        self._ciphers.promote(entry)
        self._accept(sender, epoch, counter, now)
        return Opened(sender, kid, epoch, counter, plaintext)

    def _is_replay(self, sender: str, epoch: int, counter: int, now: float) -> bool:
        s = self._senders.get(sender)
        if s is None:
            return False
        w = s.find(epoch)
        if w is None:  # a free slot takes any epoch; a full set only a newer one, not too soon
            if len(s.windows) < EPOCHS_KEPT:
                return False
            return epoch <= s.newest or now - s.admitted < NEW_EPOCH_INTERVAL_S
        if counter > w.highest:
            return False
        age = w.highest - counter
        return age >= self.window or bool(w.seen >> age & 1)

    def _accept(self, sender: str, epoch: int, counter: int, now: float) -> None:
        s = self._senders.get(sender)
        if s is None:
            self._senders[sender] = _SenderWindows([_Window(epoch, counter, 1, now)], epoch, now)
            return
        w = s.find(epoch)
        if w is None:
            if len(s.windows) >= EPOCHS_KEPT:
                s.windows.remove(min(s.windows, key=lambda x: x.used))
            s.windows.append(_Window(epoch, counter, 1, now))
            s.newest, s.admitted = max(s.newest, epoch), now
            return
        w.used = now
        if counter > w.highest:
            shift = counter - w.highest
            mask = (1 << self.window) - 1
            w.seen = ((w.seen << shift) | 1) & mask if shift < self.window else 1
            w.highest = counter
        else:
            w.seen |= 1 << (w.highest - counter)
