"""Sealed datagrams and the key ring: only the right key opens, nothing is accepted twice."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from moltmesh.mesh.drops import DropReason
from moltmesh.mesh.keyring import (
    KeyRing,
    KeyRingError,
    decode_key,
    encode_key,
    generate_key,
    key_id,
)
from moltmesh.mesh.seal import HEADER, Opener, Sealer
from moltmesh.mesh.wire import EnvelopeError

A = "aaaaaaaaaaaaaaaa"
B = "bbbbbbbbbbbbbbbb"


def drop_of(opener: Opener, datagram: bytes) -> DropReason:
    with pytest.raises(EnvelopeError) as e:
        opener.open(datagram)
    return e.value.drop


def test_seal_open_round_trip_and_sender_keys_differ():
    ring = KeyRing.generate()
    sa, sb = Sealer(ring, A, epoch=7), Sealer(ring, B, epoch=7)
    opener = Opener(ring)
    pa, pb = sa.seal(b"hello"), sb.seal(b"hello")
    assert pa[HEADER.size :] != pb[HEADER.size :]  # same counter and epoch, different keys
    got = opener.open(pa)
    assert (got.sender, got.plaintext, got.epoch, got.counter) == (A, b"hello", 7, 0)
    assert opener.open(pb).sender == B


def test_wrong_key_tampering_and_spoofed_sender_are_refused():
    ring, other = KeyRing.generate(), KeyRing.generate()
    packet = Sealer(ring, A, 1).seal(b"x" * 50)
    assert drop_of(Opener(other), packet) is DropReason.WRONG_KEY
    # The same key under another key id in the header, or another sender: authentication fails.
    spoofed = packet[:5] + B.encode() + packet[5 + 16 :]
    assert drop_of(Opener(ring), spoofed) is DropReason.WRONG_KEY
    flipped = bytearray(packet)
    flipped[-1] ^= 1
    assert drop_of(Opener(ring), bytes(flipped)) is DropReason.WRONG_KEY
    # A node holding the same ring key but a different derived key cannot forge A's packets.
    assert Opener(ring).open(packet).sender == A


def test_garbage_oversize_and_revoked():
    ring = KeyRing.generate()
    opener = Opener(ring, revoked=lambda n: n == B, max_size=200)
    assert drop_of(opener, b"") is DropReason.GARBAGE
    assert drop_of(opener, b"\x09" * 60) is DropReason.GARBAGE
    assert drop_of(opener, b"\x01" * 201) is DropReason.OVERSIZE
    assert drop_of(opener, Sealer(ring, B, 1).seal(b"x")) is DropReason.REVOKED


@given(st.binary(max_size=120))
def test_random_bytes_raise_only_envelope_error(data: bytes):
    opener = Opener(KeyRing.generate())
    with pytest.raises(EnvelopeError):
        opener.open(data)


def test_replays_are_refused_within_window_and_across_boots():
    ring = KeyRing.generate()
    sealer = Sealer(ring, A, epoch=100)
    opener = Opener(ring, window=64)
    packets = [sealer.seal(bytes([i])) for i in range(200)]
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    order = list(range(150, 200))
    rng.shuffle(order)  # reordering inside the window is accepted once each
    for i in range(150):
        assert opener.open(packets[i]).plaintext == bytes([i]), seed
    for i in order:
        assert opener.open(packets[i]).plaintext == bytes([i]), seed
    for i in rng.sample(range(200), 40):
        assert drop_of(opener, packets[i]) is DropReason.REPLAY, seed
    # A reboot (higher epoch) restarts the counter; the old boot's packets stay refused.
    rebooted = Sealer(ring, A, epoch=101)
    assert opener.open(rebooted.seal(b"new")).counter == 0
    assert drop_of(opener, packets[199]) is DropReason.REPLAY
    # A forged packet does not move the window.
    forged = bytearray(rebooted.seal(b"f"))
    forged[-1] ^= 1
    assert drop_of(opener, bytes(forged)) is DropReason.WRONG_KEY
    assert opener.open(rebooted.seal(b"ok")).plaintext == b"ok"


def test_key_ring_rotation_keeps_every_packet_openable():
    old = KeyRing.generate()
    sender_ring = KeyRing(old.keys())
    receiver_ring = KeyRing(old.keys())
    sealer, opener = Sealer(sender_ring, A, 1), Opener(receiver_ring)
    new = generate_key()
    receiver_ring.install(new)
    assert opener.open(sealer.seal(b"1")).key_id == old.primary_id
    sender_ring.install(new)
    sender_ring.use(key_id(new))
    assert opener.open(sealer.seal(b"2")).key_id == key_id(new)
    receiver_ring.use(key_id(new))
    receiver_ring.remove(old.primary_id)
    sender_ring.remove(old.primary_id)
    assert opener.open(sealer.seal(b"3")).plaintext == b"3"
    stale = Sealer(old, B, 1).seal(b"old key")
    assert drop_of(opener, stale) is DropReason.WRONG_KEY


def test_key_ring_rules_and_storage():
    ring = KeyRing.generate()
    first = ring.primary_id
    with pytest.raises(KeyRingError):
        ring.remove(first)
    with pytest.raises(KeyRingError):
        ring.use(12345)
    second = ring.install(generate_key())
    ring.use(second)
    ring.remove(first)
    assert [(k.key_id, k.primary) for k in ring.list()] == [(second, True)]
    again = KeyRing.from_json(ring.to_json())
    assert again.keys() == ring.keys() and again.primary_id == second
    assert decode_key(encode_key(ring.primary_key)) == ring.primary_key
    for bad in ("", "not base64!", encode_key(b"short")):
        with pytest.raises(KeyRingError):
            decode_key(bad)
    with pytest.raises(KeyRingError):
        KeyRing.from_json(b"{}")
