"""MeshService over real loopback sockets: gossip, key ring changes relayed over TLS, revocation
with key rotation, certificate renewal."""

from __future__ import annotations

import asyncio
import datetime as dt
import stat
from pathlib import Path

import pytest

from moltmesh.mesh import ca
from moltmesh.mesh.admin import KeyOp, KeyOpKind
from moltmesh.mesh.drops import DropReason, Transport
from moltmesh.mesh.keyring import generate_key, key_id
from moltmesh.mesh.service import MeshService
from moltmesh.mesh.streams import StreamError
from moltmesh.mesh.wire import Channel, Envelope
from tests.mesh.helpers import Echo, init_holder, join_member, mesh_config, serve

pytestmark = pytest.mark.both_loops


class Inbox:
    """Collects gossip envelopes and every processed datagram of one service."""

    def __init__(self, service: MeshService) -> None:
        self.got: list[Envelope] = []
        self.processed: asyncio.Queue[None] = asyncio.Queue()
        service.on_gossip = lambda env, addr: self.got.append(env)
        assert service.gossip is not None
        original = service.gossip.datagram_received

        def spy(data: bytes, addr: tuple[str, int]) -> None:
            original(data, addr)
            self.processed.put_nowait(None)

        service.gossip.datagram_received = spy  # type: ignore[method-assign]

    async def wait(self) -> None:
        await asyncio.wait_for(self.processed.get(), 10)


async def three_nodes(tmp_path: Path, names: str = "bc") -> list[MeshService]:
    holder_state = init_holder(tmp_path / "a")
    temp = await serve(holder_state)  # only to admit the others with real tokens
    states = [holder_state]
    try:
        for name in names:
            states.append(await join_member(temp, tmp_path / name))
    finally:
        await temp.streams.close()
    services = []
    for st in states:
        svc = MeshService(st.data_dir, mesh_config(), state=st)
        await svc.start("127.0.0.1", 0)
        services.append(svc)
    for svc in services[1:]:
        svc.state.ca_address = services[0].address  # the holder's real port, not the temp one
    for svc in services:
        for other in services:
            if other is not svc:
                svc.add_peer(other.node_id, other.address)
    return services


async def stop_all(services: list[MeshService]) -> None:
    for svc in services:
        await svc.stop()


async def test_key_ring_changes_are_relayed_and_gossip_continues(tmp_path: Path):
    services = await three_nodes(tmp_path)
    a, b, c = services
    inbox = Inbox(b)
    try:
        assert (b.state.dir / "stream-address").read_text().strip() == b.address
        assert a.gossip is not None
        a.gossip.send(b.address, Channel.SWIM, b"before")
        await inbox.wait()
        new = generate_key()
        old = a.state.keyring.primary_id
        for op in (
            KeyOp(KeyOpKind.INSTALL, new, key_id(new)),
            KeyOp(KeyOpKind.USE, b"", key_id(new)),
            KeyOp(KeyOpKind.REMOVE, b"", old),
        ):
            results = await a.key_op(op)  # only a CA holder changes the ring (review9 H3)
            assert results == {b.node_id: None, c.node_id: None}
            a.gossip.send(b.address, Channel.SWIM, op.kind.name.encode())
            await inbox.wait()
        for svc in services:
            assert [(k.key_id, k.primary) for k in svc.state.keyring.list()] == [
                (key_id(new), True)
            ]
            assert stat.S_IMODE((svc.state.dir / "keyring.json").stat().st_mode) == 0o600
        assert [e.body for e in inbox.got] == [b"before", b"INSTALL", b"USE", b"REMOVE"]
        assert b.drops.total() == 0
    finally:
        await stop_all(services)


async def test_revoked_node_is_refused_everywhere_and_loses_the_gossip_key(tmp_path: Path):
    services = await three_nodes(tmp_path)
    a, b, c = services
    inbox = Inbox(b)
    echo = Echo()
    b.streams.handlers[Channel.INFER] = echo
    try:
        with pytest.raises(Exception, match="CA holder"):
            await b.revoke(c.node_id)
        results = await a.revoke(c.node_id)
        assert results == {b.node_id: None}  # c is not told anything
        assert c.node_id in b.state.revocations and c.node_id in a.state.revocations
        assert a.state.keyring.keys() == b.state.keyring.keys()
        assert len(b.state.keyring.keys()) == 1
        assert not set(c.state.keyring.keys()) & set(b.state.keyring.keys())
        # c's gossip is refused (as revoked, and it no longer holds the key) ...
        assert c.gossip is not None and a.gossip is not None
        c.gossip.send(b.address, Channel.SWIM, b"forged")
        await inbox.wait()
        assert b.drops.get(DropReason.REVOKED, Transport.UDP) == 1
        # ... its streams are refused ...
        with pytest.raises(StreamError):
            await c.streams.request(b.node_id, b.address, Channel.INFER, b"hello?")
        assert echo.got == []
        # ... and it cannot come back with a key change.
        c.state.keyring.install(generate_key())
        evil = KeyOp(
            KeyOpKind.INSTALL, c.state.keyring.keys()[-1], key_id(c.state.keyring.keys()[-1])
        )
        with pytest.raises(Exception, match="CA holder"):
            await c.key_op(evil)
        assert len(b.state.keyring.keys()) == 1
        # The others still talk, with the new key.
        a.gossip.send(b.address, Channel.SWIM, b"fine")
        await inbox.wait()
        assert [e.body for e in inbox.got] == [b"fine"]
        _, reply = await a.streams.request(b.node_id, b.address, Channel.INFER, b"x")
        assert reply == b"echo:x"
    finally:
        await stop_all(services)


async def test_certificate_renewal_at_two_thirds(tmp_path: Path):
    services = await three_nodes(tmp_path)
    a, b, _ = services
    try:
        cert = b.state.node_cert
        due = ca.renewal_time(cert)
        start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
        assert due - start == pytest.approx((end - start) * 2 / 3, abs=dt.timedelta(seconds=1))
        assert not await b.renew_if_due(due - dt.timedelta(seconds=1))
        assert await b.renew_if_due(due)  # from the CA holder, over mutual TLS
        assert b.state.node_cert.serial_number != cert.serial_number
        assert b.state.node_cert.not_valid_after_utc >= end
        assert ca.node_id_of(b.state.node_cert) == b.node_id
        assert stat.S_IMODE(b.state.node_cert_path.stat().st_mode) == 0o600
        assert ca.load_cert(b.state.node_cert_path.read_bytes()) == b.state.node_cert
        assert await a.renew_if_due(ca.renewal_time(a.state.node_cert))  # the holder self-issues
        # Both sides present their renewed certificates on new streams.
        b.streams.drop_peer(a.node_id)
        echo = Echo()
        a.streams.handlers[Channel.INFER] = echo
        _, reply = await b.streams.request(a.node_id, a.address, Channel.INFER, b"renewed")
        assert reply == b"echo:renewed"
    finally:
        await stop_all(services)


def away(node: MeshService, services: list[MeshService]) -> None:
    """``node`` is unreachable for the others' relays (as if switched off)."""
    for svc in services:
        svc.static_peers.pop(node.node_id, None)


def back(node: MeshService, services: list[MeshService]) -> None:
    for svc in services:
        if svc is not node:
            svc.add_peer(node.node_id, node.address)


async def test_a_member_away_during_a_rotation_catches_up(tmp_path: Path):
    services = await three_nodes(tmp_path)
    a, b, c = services
    inbox_b, inbox_c = Inbox(b), Inbox(c)
    try:
        away(c, services)
        new = generate_key()
        old = a.state.keyring.primary_id
        install = KeyOp(KeyOpKind.INSTALL, new, key_id(new))
        for op in (
            install,
            KeyOp(KeyOpKind.USE, b"", key_id(new)),
            KeyOp(KeyOpKind.REMOVE, b"", old),
        ):
            assert await a.key_op(op) == {b.node_id: None}
        assert b.state.keyring.generation == 3 and c.state.keyring.generation == 0
        back(c, services)
        assert c.gossip is not None and b.gossip is not None
        # c's stale packets are refused by b, and b does not go back to c's older ring.
        c.gossip.send(b.address, Channel.SWIM, b"stale")
        await inbox_b.wait()
        if b._sync_task is not None:
            await b._sync_task
        assert b.state.keyring.keys() == [new] and inbox_b.got == []
        # b's packets name a key c lacks: c fetches b's ring over TLS and adopts it.
        b.gossip.send(c.address, Channel.SWIM, b"fresh")
        await inbox_c.wait()
        assert c._sync_task is not None
        await c._sync_task
        assert c.state.keyring.keys() == [new] and c.state.keyring.generation == 3
        c.gossip.send(b.address, Channel.SWIM, b"caught up")
        await inbox_b.wait()
        assert [e.body for e in inbox_b.got] == [b"caught up"]
    finally:
        await stop_all(services)


async def test_a_member_away_during_a_revocation_learns_it_from_any_member(tmp_path: Path):
    services = await three_nodes(tmp_path, "bcd")
    a, b, c, d = services
    inbox_c = Inbox(c)
    try:
        away(c, services)
        old_keys = {k.key_id for k in a.state.keyring.list()}
        assert await a.revoke(d.node_id) == {b.node_id: None}
        back(c, services)
        assert b.gossip is not None and d.gossip is not None
        b.gossip.send(c.address, Channel.SWIM, b"hello")
        await inbox_c.wait()
        assert c._sync_task is not None
        await c._sync_task
        assert d.node_id in c.state.revocations
        assert set(c.state.revocations.retired_keys) == old_keys
        assert c.state.keyring.keys() == b.state.keyring.keys()
        assert not old_keys & {k.key_id for k in c.state.keyring.list()}
        d.gossip.send(c.address, Channel.SWIM, b"forged")
        await inbox_c.wait()
        assert c.drops.get(DropReason.REVOKED, Transport.UDP) == 1
        assert inbox_c.got == []
    finally:
        await stop_all(services)
