"""Key ring changes come only from the mesh's authority (the CA), review9 H3: a member's bare
``KeyOp`` or ``RelayKeyOp`` is refused and counted; generations are CA-signed, bounded and never
bumped by a no-op; codec errors are answered; ``revoke`` rotates the key in the same push as the
revocation list, and a rotation that cannot happen is reported before anything is published."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from moltmesh.mesh.admin import (
    ADMIN_CODEC,
    AdminReply,
    KeyOp,
    KeyOpKind,
    RelayKeyOp,
    Revoke,
    RingRequest,
    SignedRing,
    SignedRingRequest,
)
from moltmesh.mesh.drops import DropReason, Transport
from moltmesh.mesh.keyring import (
    MAX_GENERATION,
    KeyRing,
    KeyRingError,
    RingStatement,
    generate_key,
    key_id,
)
from moltmesh.mesh.seal import Sealer
from moltmesh.mesh.service import MeshService
from moltmesh.mesh.store import load
from moltmesh.mesh.wire import Channel, Envelope, encode_envelope
from tests.mesh.test_service import Inbox, stop_all, three_nodes

pytestmark = pytest.mark.both_loops


async def ask(frm: MeshService, to: MeshService, msg: object) -> object:
    """``frm`` sends one admin request to ``to`` over mutual TLS; returns the decoded reply."""
    _, raw = await frm.streams.request(
        to.node_id, to.address, Channel.ADMIN, ADMIN_CODEC.encode(msg)
    )
    return ADMIN_CODEC.decode(raw)


def ring_file(svc: MeshService) -> bytes:
    return (svc.state.dir / "keyring.json").read_bytes()


async def test_a_members_key_ops_are_refused_counted_and_change_nothing(tmp_path: Path):
    services = await three_nodes(tmp_path)
    a, b, c = services
    try:
        before = {svc.node_id: ring_file(svc) for svc in services}
        poison = KeyOp(KeyOpKind.REMOVE, b"", 0x12345678, MAX_GENERATION)  # generation_poison.py
        evil_key = generate_key()
        install = KeyOp(KeyOpKind.INSTALL, evil_key, key_id(evil_key), 1)
        for target in (a, b):
            for msg in (poison, install, RelayKeyOp(install), Revoke(b.node_id)):
                reply = await ask(c, target, msg)
                assert isinstance(reply, AdminReply) and not reply.ok, (target, msg, reply)
        assert a.refused == {"KeyOp": 2, "RelayKeyOp": 1, "Revoke": 1}
        assert b.refused == {"KeyOp": 2, "RelayKeyOp": 1, "Revoke": 1}
        samples = {x.labels["request"]: x.value for x in b.refusals_family().samples}
        assert samples == {"KeyOp": 2, "RelayKeyOp": 1, "Revoke": 1}
        # c's own CLI cannot make c (not a CA holder) change the mesh's ring either.
        reply = await ask(c, c, RelayKeyOp(install))
        assert isinstance(reply, AdminReply) and "CA holder" in reply.error
        with pytest.raises(Exception, match="CA holder"):
            await c.key_op(install)
        assert {svc.node_id: ring_file(svc) for svc in services} == before
        assert all(svc.state.keyring.generation == 0 for svc in services)
    finally:
        await stop_all(services)


async def test_only_ca_signed_rings_are_adopted_whoever_relays_them(tmp_path: Path):
    services = await three_nodes(tmp_path)
    a, b, c = services
    try:
        new = generate_key()
        assert await a.key_op(KeyOp(KeyOpKind.INSTALL, new, key_id(new))) == {
            b.node_id: None, c.node_id: None,
        }  # fmt: skip
        assert b.state.keyring.generation == 1 and b.state.keyring.get(key_id(new)) == new
        # A statement signed by anything but the CA (here c's own key) is refused.
        mine = generate_key()
        forged = RingStatement(a.state.mesh_id, 7, (mine,), key_id(mine))
        reply = await ask(c, b, SignedRing(forged.sign(Ed25519PrivateKey.generate()), b""))
        assert isinstance(reply, AdminReply) and "not signed" in reply.error
        # A genuine but older (replayed) statement changes nothing and is answered as stale;
        # the current one again is a no-op.
        old_statement = b.state.keyring.signed
        assert await a.key_op(KeyOp(KeyOpKind.USE, b"", key_id(new))) != {}
        assert b.state.keyring.generation == 2
        reply = await ask(c, b, SignedRing(old_statement, b""))
        assert isinstance(reply, AdminReply) and "stale" in reply.error
        reply = await ask(c, b, SignedRing(b.state.keyring.signed, b""))
        assert isinstance(reply, AdminReply) and reply.ok
        assert b.state.keyring.generation == 2 and b.state.keyring.primary_id == key_id(new)
        # A member that pushed its own ring to a huge generation cannot hand it on by a sync.
        c.state.keyring.install(mine)
        c.state.keyring.use(key_id(mine))
        c.state.keyring.generation = MAX_GENERATION
        assert not await b.sync_from(c.node_id, c.address)
        assert b.state.keyring.get(key_id(mine)) is None
        # The signed ring a member hands on is the CA's, adopted by one that missed it.
        reply = await ask(b, c, SignedRingRequest())
        assert isinstance(reply, SignedRing) and reply.statement == b.state.keyring.signed
    finally:
        await stop_all(services)


async def test_a_no_op_does_not_bump_the_generation_and_exhaustion_is_an_answer(tmp_path: Path):
    services = await three_nodes(tmp_path)
    a, b, _ = services
    try:
        absent = KeyOp(KeyOpKind.REMOVE, b"", 0x12345678)
        assert await a.key_op(absent) == {}
        primary = KeyOp(KeyOpKind.USE, b"", a.state.keyring.primary_id)
        assert await a.key_op(primary) == {}
        assert a.state.keyring.generation == 0 and b.state.keyring.generation == 0
        # At the largest generation the wire carries, a change is refused with a reply (not a
        # dead handler, review9: EncodeError ... int 4294967296 out of range).
        a.state.keyring.generation = MAX_GENERATION
        new = generate_key()
        reply = await ask(a, a, RelayKeyOp(KeyOp(KeyOpKind.INSTALL, new, key_id(new))))
        assert isinstance(reply, AdminReply) and "exhausted" in reply.error
        reply = await ask(a, a, Revoke(b.node_id))
        assert isinstance(reply, AdminReply) and "exhausted" in reply.error
        assert a.state.keyring.get(key_id(new)) is None
        assert b.node_id not in a.state.revocations  # nothing published before the rotation
        assert b.state.revocations.serial == 0
        with pytest.raises(KeyRingError, match="out of"):
            RingStatement(a.state.mesh_id, MAX_GENERATION + 1, (new,), key_id(new))._check()
    finally:
        await stop_all(services)


async def test_a_reply_that_cannot_be_encoded_is_answered_as_an_error(tmp_path: Path):
    services = await three_nodes(tmp_path)
    a, _, c = services
    try:
        # review9: a ring at generation 2**32 made every RingRequest end in EOF and a traceback.
        a.state.keyring.generation = 2**32  # cannot happen any more; forced to hit the codec
        reply = await ask(c, a, RingRequest())
        assert isinstance(reply, AdminReply) and "out of range" in reply.error
        a.state.keyring.generation = 0
        reply = await ask(c, a, RingRequest())  # the handler is still there
        assert not isinstance(reply, AdminReply)
    finally:
        await stop_all(services)


def test_a_saved_ring_with_an_unsigned_or_out_of_range_generation_is_repaired(tmp_path: Path):
    ring = KeyRing.generate()
    obj = json.loads(ring.to_json())
    for bad in (2**32, 2**32 - 1, 5):  # review9 left 4294967296 on the CA holder
        obj["generation"] = bad
        loaded = KeyRing.from_json(json.dumps(obj).encode())
        assert loaded.generation == 0 and str(bad) in loaded.note
        assert loaded.keys() == ring.keys()
    ca_key = Ed25519PrivateKey.generate()
    ring.signed = RingStatement.of(ring, "m", 9).sign(ca_key)
    ring.generation = 9
    loaded = KeyRing.from_json(ring.to_json())
    assert (loaded.generation, loaded.signed, loaded.note) == (9, ring.signed, "")


async def test_a_ca_holder_loaded_from_a_poisoned_file_still_rotates(tmp_path: Path):
    services = await three_nodes(tmp_path)
    a, b, c = services
    await stop_all(services)
    for svc in services:
        path = svc.state.dir / "keyring.json"
        obj = json.loads(path.read_bytes())
        obj["generation"] = 2**32 if svc is a else 2**32 - 1
        path.write_text(json.dumps(obj))
    reloaded = []
    for svc in services:
        again = MeshService(svc.data_dir, svc.config, state=load(svc.data_dir))
        await again.start("127.0.0.1", 0)
        reloaded.append(again)
    a, b, c = reloaded
    for svc in reloaded:
        svc.state.ca_address = a.address
        for other in reloaded:
            if other is not svc:
                svc.add_peer(other.node_id, other.address)
    try:
        new = generate_key()
        assert await a.key_op(KeyOp(KeyOpKind.INSTALL, new, key_id(new))) == {
            b.node_id: None, c.node_id: None,
        }  # fmt: skip
        assert all(svc.state.keyring.generation == 1 for svc in reloaded)
    finally:
        await stop_all(reloaded)


async def test_revoke_rotates_the_key_with_the_list_so_a_stolen_ring_is_useless(tmp_path: Path):
    services = await three_nodes(tmp_path)
    a, b, c = services
    inbox = Inbox(b)
    try:
        stolen = KeyRing(c.state.keyring.keys(), c.state.keyring.primary_id)  # c as a member
        results = await a.revoke(c.node_id)
        assert results == {b.node_id: None}
        assert c.node_id in b.state.revocations
        assert b.state.keyring.keys() == a.state.keyring.keys()
        assert not set(b.state.keyring.keys()) & set(stolen.keys())
        assert b.state.keyring.generation == a.state.keyring.generation == 1
        # stolen_key.py: c seals under a made-up sender id with the ring it held.
        forger = Sealer(stolen, "z" * 16, 77)
        env = Envelope(a.state.mesh_id, Channel.SWIM, "z" * 16, b"forged")
        assert c.gossip is not None and c.gossip._transport is not None
        c.gossip._transport.sendto(forger.seal(encode_envelope(env)), ("127.0.0.1", b_port(b)))
        await inbox.wait()
        assert inbox.got == [] and b.drops.get(DropReason.WRONG_KEY, Transport.UDP) == 1
    finally:
        await stop_all(services)


def b_port(svc: MeshService) -> int:
    return int(svc.address.rsplit(":", 1)[1])


async def test_a_lagging_ca_holder_catches_up_before_it_changes_the_ring(tmp_path: Path):
    """review11 H1: a CA holder restored from an older backup (or a second one that was away)
    signed a generation the members already held; they kept their ring and the change was
    reported as applied everywhere."""
    services = await three_nodes(tmp_path)
    a, b, c = services
    try:
        backup = KeyRing(a.state.keyring.keys(), a.state.keyring.primary_id)  # generation 0
        for _ in range(2):
            new = generate_key()
            assert await a.key_op(KeyOp(KeyOpKind.INSTALL, new, key_id(new))) == {
                b.node_id: None, c.node_id: None,
            }  # fmt: skip
        assert b.state.keyring.generation == 2
        a.state.keyring = backup  # the holder lost its last two changes
        third = generate_key()
        assert await a.key_op(KeyOp(KeyOpKind.INSTALL, third, key_id(third))) == {
            b.node_id: None, c.node_id: None,
        }  # fmt: skip
        rings = [(s.state.keyring.generation, set(s.state.keyring.keys())) for s in services]
        assert rings[0] == rings[1] == rings[2] and rings[0][0] == 3 and len(rings[0][1]) == 4
    finally:
        await stop_all(services)


async def test_a_split_at_the_same_generation_is_refused_and_revoke_retires_both(tmp_path: Path):
    services = await three_nodes(tmp_path)
    a, b, c = services
    try:
        new = generate_key()
        await a.key_op(KeyOp(KeyOpKind.INSTALL, new, key_id(new)))  # members at generation 1
        members_keys = set(b.state.keyring.keys())
        assert a.state.ca_key is not None
        split = KeyRing([generate_key()])  # another ring at the same generation, also signed
        split.signed = RingStatement.of(split, a.state.mesh_id, 1).sign(a.state.ca_key)
        split.generation = 1
        split_keys = set(split.keys())
        reply = await ask(a, b, SignedRing(split.signed, b""))
        assert isinstance(reply, AdminReply) and not reply.ok and "not adopted" in reply.error
        a.state.keyring = split
        assert await a.revoke(c.node_id) == {b.node_id: None}
        assert b.state.keyring.keys() == a.state.keyring.keys()
        assert b.state.keyring.generation == a.state.keyring.generation == 2
        assert not set(b.state.keyring.keys()) & (members_keys | split_keys)
    finally:
        await stop_all(services)
