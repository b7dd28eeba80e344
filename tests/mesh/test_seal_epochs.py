"""Boot epochs and key derivations under attack (review9 H3 epoch poisoning, M6 derivation flood):
an implausible epoch is dropped without moving any window, a forged plausible one cannot shut out
the real sender, and forged sender ids cost a bounded number of derivations and never evict the
members' derived keys."""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path

import pytest

from moltmesh.mesh import store
from moltmesh.mesh.drops import DropReason, Transport
from moltmesh.mesh.keyring import KeyRing
from moltmesh.mesh.seal import (
    EPOCHS_KEPT,
    HEADER,
    MAX_EPOCH_SKEW_S,
    NEW_EPOCH_INTERVAL_S,
    UNSEEN_DERIVATIONS_BURST,
    UNSEEN_DERIVATIONS_PER_S,
    Opener,
    Sealer,
)
from moltmesh.mesh.service import MeshService
from moltmesh.mesh.wire import Channel, Envelope, EnvelopeError, encode_envelope
from tests.mesh.helpers import init_holder, mesh_config
from tests.mesh.test_seal import drop_of
from tests.mesh.test_service import Inbox, stop_all, three_nodes

A = "aaaaaaaaaaaaaaaa"
B = "bbbbbbbbbbbbbbbb"
NOW = 1_800_000_000.0  # the receiver's wall clock in these tests


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def opener_for(ring: KeyRing, mono: Clock | None = None) -> Opener:
    return Opener(ring, clock=lambda: NOW, monotonic=mono or Clock())


def test_an_epoch_far_ahead_is_dropped_and_moves_no_window():
    ring = KeyRing.generate()
    real = Sealer(ring, A, int(NOW) - 100)
    opener = opener_for(ring)
    assert opener.open(real.seal(b"1")).plaintext == b"1"
    for epoch in (2**32 - 1, int(NOW) + MAX_EPOCH_SKEW_S + 1):  # epoch_poison_all.py
        poison = Sealer(ring, A, epoch).seal(b"poison")  # sealed by a holder of the ring key
        assert drop_of(opener, poison) is DropReason.FUTURE_EPOCH
    assert opener.open(real.seal(b"2")).plaintext == b"2"
    ahead = Sealer(ring, A, int(NOW) + MAX_EPOCH_SKEW_S)  # within the allowed skew: a clock
    assert opener.open(ahead.seal(b"3")).plaintext == b"3"


def test_a_forged_plausible_epoch_does_not_silence_the_real_sender():
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    ring = KeyRing.generate()
    mono = Clock()
    opener = opener_for(ring, mono)
    real = Sealer(ring, A, int(NOW) - 1000)
    accepted = 0
    for step in range(300):  # 30 s: the real sender every 0.1 s, forgeries at random moments
        mono.t += 0.1
        if rng.random() < 0.3:
            epoch = rng.randrange(int(NOW) - 500, int(NOW) + MAX_EPOCH_SKEW_S)
            forged = Sealer(ring, A, epoch)
            forged.counter = rng.randrange(2**20)
            try:
                opener.open(forged.seal(b"forged"))
            except EnvelopeError as e:
                assert e.drop is DropReason.REPLAY, seed
        assert opener.open(real.seal(b"%d" % step)).plaintext == b"%d" % step, seed
        accepted += 1
    assert accepted == 300


def test_reboots_are_accepted_and_old_boots_stay_refused():
    ring = KeyRing.generate()
    mono = Clock()
    opener = opener_for(ring, mono)
    base = int(NOW) - 10_000
    first = Sealer(ring, A, base)
    seen = [first.seal(b"%d" % i) for i in range(5)]
    unsent = first.seal(b"late")  # delayed in the network until after the reboot
    for d in seen:
        opener.open(d)
    boots = [Sealer(ring, A, base + i) for i in range(1, EPOCHS_KEPT)]
    for s in boots:  # quick reboots: each new epoch is accepted at once while slots are free
        assert opener.open(s.seal(b"up")).counter == 0
    assert all(drop_of(opener, d) is DropReason.REPLAY for d in seen)
    assert opener.open(unsent).plaintext == b"late"  # its boot is still tracked, never seen
    assert drop_of(opener, unsent) is DropReason.REPLAY
    # Slots full: one more new epoch waits NEW_EPOCH_INTERVAL_S, then takes the least used slot.
    again = Sealer(ring, A, base + EPOCHS_KEPT)
    assert drop_of(opener, again.seal(b"too soon")) is DropReason.REPLAY
    mono.t += NEW_EPOCH_INTERVAL_S
    assert opener.open(again.seal(b"later")).plaintext == b"later"
    assert drop_of(opener, Sealer(ring, A, base).seal(b"evicted boot")) is DropReason.REPLAY
    assert drop_of(opener, Sealer(ring, A, base - 1).seal(b"older boot")) is DropReason.REPLAY


def test_a_flood_of_forged_sender_ids_costs_bounded_derivations_and_evicts_no_member():
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    ring = KeyRing.generate()
    mono = Clock()
    opener = opener_for(ring, mono)
    members = [Sealer(ring, A, 5), Sealer(ring, B, 5)]
    for m in members:
        opener.open(m.seal(b"hello"))
    assert opener.derivations == 2
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    flood, dropped = 5_000, 0
    for _ in range(flood):  # udp_flood.py: random sender ids, fresh epochs, the real key id
        mono.t += 2.0 / flood  # 2 s of flood in all
        sender = "".join(rng.choice(alphabet) for _ in range(16)).encode()
        header = HEADER.pack(1, ring.primary_id, sender, rng.randrange(1, int(NOW)), 0)
        dropped += drop_of(opener, header + rng.randbytes(56)) is DropReason.WRONG_KEY
    assert dropped == flood, seed
    bound = UNSEEN_DERIVATIONS_BURST + 2.0 * UNSEEN_DERIVATIONS_PER_S + 1
    assert opener.derivations - 2 <= bound, (seed, opener.derivations)
    before = opener.derivations
    for m in members:  # the members' keys are still cached: no derivation, no drop
        assert opener.open(m.seal(b"still here")).plaintext == b"still here"
    assert opener.derivations == before
    # A new member is heard once the bucket refills.
    mono.t += 1.0
    assert opener.open(Sealer(ring, "cccccccccccccccc", 5).seal(b"new")).plaintext == b"new"


@pytest.mark.both_loops
async def test_one_poisoned_datagram_does_not_silence_a_member(tmp_path: Path):
    services = await three_nodes(tmp_path)
    a, b, c = services
    inbox = Inbox(b)
    try:
        assert a.gossip is not None and c.gossip is not None and c.gossip._transport is not None
        a.gossip.send(b.address, Channel.SWIM, b"before")
        await inbox.wait()
        # c holds the ring key as a member and seals as a with the largest boot epoch.
        forger = Sealer(c.state.keyring, a.node_id, 2**32 - 1)
        env = Envelope(a.state.mesh_id, Channel.SWIM, a.node_id, b"poison")
        port = int(b.address.rsplit(":", 1)[1])
        c.gossip._transport.sendto(forger.seal(encode_envelope(env)), ("127.0.0.1", port))
        await inbox.wait()
        assert b.drops.get(DropReason.FUTURE_EPOCH, Transport.UDP) == 1
        a.gossip.send(b.address, Channel.SWIM, b"after")
        await inbox.wait()
        assert [e.body for e in inbox.got] == [b"before", b"after"]
    finally:
        await stop_all(services)


@pytest.mark.both_loops
async def test_a_boot_epoch_recorded_far_ahead_is_reported_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    state = init_holder(tmp_path / "a")
    far = int(time.time()) + 10 * MAX_EPOCH_SKEW_S  # written while the clock was wrong
    (store.mesh_dir(state.data_dir) / "boot-epoch").write_text(f"{far}\n")
    svc = MeshService(state.data_dir, mesh_config(), state=state)
    with caplog.at_level(logging.ERROR, logger="moltmesh.mesh.service"):
        await svc.start("127.0.0.1", 0)
    try:
        assert [r.getMessage() for r in caplog.records] == ["mesh.boot_epoch_ahead"]
    finally:
        await svc.stop()


async def test_the_gossip_epoch_bound_is_the_meshs_clock_skew_setting(tmp_path: Path):
    """review11 M3: one clock rule for the mesh: a device whose clock lags by more than the
    default but within ``mesh.max_clock_skew_s`` still hears peers that booted recently."""
    config = mesh_config()
    config.max_clock_skew_s = 900.0
    svc = MeshService(tmp_path / "a", config, state=init_holder(tmp_path / "a"))
    await svc.start("127.0.0.1", 0)
    try:
        assert svc.gossip is not None and svc.gossip.opener.max_epoch_skew_s == 900.0
    finally:
        await svc.stop()
