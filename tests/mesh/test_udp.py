"""Sealed gossip over real loopback UDP sockets: delivery, refusals counted, rotation loses nothing.

Each test waits on "datagram processed" events from the receiving transport, never on sleeps.
"""

from __future__ import annotations

import asyncio
import random
import socket

import pytest

from moltmesh.mesh.drops import DropCounters, DropReason, Transport
from moltmesh.mesh.keyring import KeyRing, generate_key, key_id
from moltmesh.mesh.udp import GossipTransport
from moltmesh.mesh.wire import Channel, Envelope, encode_envelope

MESH = "testmesh"
IDS = ["aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb", "cccccccccccccccc"]

pytestmark = pytest.mark.both_loops


class Recording(GossipTransport):
    """Records delivered envelopes and signals every processed datagram."""

    def __init__(self, *args: object, **kw: object) -> None:
        super().__init__(*args, on_receive=self._got, **kw)  # type: ignore[misc, arg-type]
        self.received: list[Envelope] = []
        self.processed: asyncio.Queue[int] = asyncio.Queue()

    def _got(self, env: Envelope, addr: tuple[str, int]) -> None:
        self.received.append(env)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
        super().datagram_received(data, addr)
        self.processed.put_nowait(len(data))

    async def wait_processed(self, n: int = 1) -> None:
        for _ in range(n):
            await asyncio.wait_for(self.processed.get(), 10)


async def node(
    node_id: str, ring: KeyRing, mesh: str = MESH, epoch: int = 1, **kw: object
) -> tuple[Recording, str]:
    t = Recording(mesh, node_id, ring, epoch, kw.pop("drops", DropCounters()), **kw)  # type: ignore[arg-type]
    host, port = await t.start("127.0.0.1", 0)
    return t, f"{host}:{port}"


def raw_send(address: str, data: bytes) -> None:
    host, port = address.rsplit(":", 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(data, (host, int(port)))


async def test_delivery_and_every_refusal_is_counted():
    ring = KeyRing.generate()
    a, _ = await node(IDS[0], ring)
    b, b_addr = await node(IDS[1], KeyRing(ring.keys()), revoked=lambda n: n == IDS[2])
    stranger, _ = await node(IDS[0], KeyRing.generate(), epoch=5)
    other_mesh, _ = await node("dddddddddddddddd", ring, mesh="othermesh")
    revoked, _ = await node(IDS[2], ring)
    try:
        a.send(b_addr, Channel.SWIM, b"ping")
        await b.wait_processed()
        assert [(e.sender, e.channel, e.body) for e in b.received] == [
            (IDS[0], Channel.SWIM, b"ping")
        ]

        sealed = a.sealer.seal(b"\x93")  # a valid seal around an invalid envelope
        cases = [
            (lambda: stranger.send(b_addr, Channel.SWIM, b"x"), DropReason.WRONG_KEY),
            (lambda: other_mesh.send(b_addr, Channel.SWIM, b"x"), DropReason.WRONG_MESH),
            (lambda: revoked.send(b_addr, Channel.SWIM, b"x"), DropReason.REVOKED),
            (lambda: raw_send(b_addr, b"garbage"), DropReason.GARBAGE),
            (lambda: raw_send(b_addr, bytes(3000)), DropReason.OVERSIZE),
            (lambda: raw_send(b_addr, sealed), DropReason.GARBAGE),
            (lambda: raw_send(b_addr, sealed), DropReason.REPLAY),
        ]
        for send, reason in cases:
            before = b.drops.get(reason, Transport.UDP)
            send()
            await b.wait_processed()
            assert b.drops.get(reason, Transport.UDP) == before + 1, reason
        assert len(b.received) == 1
    finally:
        for t in (a, b, stranger, other_mesh, revoked):
            t.close()


async def test_replayed_datagrams_are_never_delivered_twice():
    ring = KeyRing.generate()
    a, _ = await node(IDS[0], ring)
    b, b_addr = await node(IDS[1], KeyRing(ring.keys()))
    try:
        packets = []
        for i in range(20):
            env_bytes = encode_envelope(Envelope(MESH, Channel.SWIM, IDS[0], bytes([i])))
            packets.append(a.sealer.seal(env_bytes))
        seed = random.randrange(2**32)
        order = packets + random.Random(seed).sample(packets, 20)
        for p in order:
            raw_send(b_addr, p)
        await b.wait_processed(len(order))
        assert sorted(e.body for e in b.received) == [bytes([i]) for i in range(20)], seed
        assert b.drops.get(DropReason.REPLAY) == 20, seed
    finally:
        a.close()
        b.close()


async def test_key_rotation_under_traffic_loses_nothing():
    """Install everywhere, then use, then remove (as Serf): every datagram of every round lands."""
    first = KeyRing.generate()
    rings = [KeyRing(first.keys()) for _ in IDS]
    nodes = [await node(nid, ring) for nid, ring in zip(IDS, rings, strict=True)]
    new_key = generate_key()
    steps = [
        *[lambda r=r: r.install(new_key) for r in rings],
        *[lambda r=r: r.use(key_id(new_key)) for r in rings],
        *[lambda r=r: r.remove(first.primary_id) for r in rings],
    ]
    sent = 0
    try:
        for round_no in range(len(steps) + 3):
            # Every node sends to every other; a rotation step lands in the middle of the round.
            for i, (t, _) in enumerate(nodes):
                for j, (_, addr) in enumerate(nodes):
                    if i != j:
                        t.send(addr, Channel.SWIM, f"{round_no}:{i}".encode())
                        sent += 1
                if i == 1 and round_no < len(steps):
                    steps[round_no]()
            for t, _ in nodes:
                await t.wait_processed(len(nodes) - 1)
        received = sum(len(t.received) for t, _ in nodes)
        assert received == sent
        assert sum(t.drops.total() for t, _ in nodes) == 0
        assert all(r.list()[0].key_id == key_id(new_key) and len(r.list()) == 1 for r in rings)
    finally:
        for t, _ in nodes:
            t.close()


async def test_sending_beyond_the_datagram_limit_is_our_bug():
    from consensus.errors import LocalProtocolError

    t, addr = await node(IDS[0], KeyRing.generate(), max_datagram=600)
    try:
        with pytest.raises(LocalProtocolError):
            t.send(addr, Channel.SWIM, bytes(600))
    finally:
        t.close()
