"""Sealed UDP gossip: one datagram is one sealed envelope (``seal``), for SWIM packets.

``GossipTransport`` binds a UDP socket, seals what it sends with the key ring's primary key and
opens what it receives with whichever ring key the datagram names. Everything that is not a valid,
fresh, authenticated envelope of our mesh from a non-revoked sender is dropped and counted by
reason; the receive callback sees only good envelopes. Nothing raised by bad input, nor by the
callback, reaches the event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from consensus.errors import LocalProtocolError
from moltmesh.logs import log_event
from moltmesh.mesh.drops import DropCounters, DropReason, Transport
from moltmesh.mesh.keyring import KeyRing
from moltmesh.mesh.seal import OVERHEAD, Opener, Sealer
from moltmesh.mesh.tokens import split_address
from moltmesh.mesh.wire import (
    Channel,
    Envelope,
    EnvelopeError,
    decode_envelope,
    encode_envelope,
)

log = logging.getLogger("moltmesh.mesh.udp")

Receive = Callable[[Envelope, tuple[str, int]], None]


@dataclass
class GossipStats:
    packets_in: int = 0
    packets_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0


class GossipTransport(asyncio.DatagramProtocol):
    """Sealed datagrams for one node. ``on_receive(envelope, (host, port))`` gets good input."""

    def __init__(
        self,
        mesh_id: str,
        node_id: str,
        ring: KeyRing,
        epoch: int,
        drops: DropCounters,
        on_receive: Receive,
        revoked: Callable[[str], bool] = lambda _n: False,
        max_datagram: int = 2048,
        replay_window: int = 1024,
    ) -> None:
        self.mesh_id = mesh_id
        self.node_id = node_id
        self.drops = drops
        self.on_receive = on_receive
        self.max_datagram = max_datagram
        self.sealer = Sealer(ring, node_id, epoch)
        self.opener = Opener(ring, revoked, replay_window, max_datagram)
        self.stats = GossipStats()
        self._transport: asyncio.DatagramTransport | None = None

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Bind ``host:port`` (0 = any free port); returns the bound address."""
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=(host, port))
        self._transport = transport
        sockname = transport.get_extra_info("sockname")
        return sockname[0], sockname[1]

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # a datagram transport

    def send(self, address: str | tuple[str, int], channel: Channel, body: bytes) -> int:
        """Seal and send one envelope; returns the datagram's size.

        Raises ``LocalProtocolError`` if it would exceed the datagram limit (a bug of the
        caller, which must respect its packet budget) or the transport is closed.
        """
        if self._transport is None:
            raise LocalProtocolError("gossip transport is not started")
        addr = split_address(address) if isinstance(address, str) else address
        env = Envelope(self.mesh_id, channel, self.node_id, body)
        datagram = self.sealer.seal(encode_envelope(env, self.max_datagram - OVERHEAD))
        self._transport.sendto(datagram, addr)
        self.stats.packets_out += 1
        self.stats.bytes_out += len(datagram)
        return len(datagram)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
        self.stats.packets_in += 1
        self.stats.bytes_in += len(data)
        try:
            opened = self.opener.open(data)
            env = decode_envelope(opened.plaintext, self.mesh_id, self.max_datagram)
            if env.sender != opened.sender:
                raise EnvelopeError(DropReason.GARBAGE, "envelope sender differs from the seal's")
        except EnvelopeError as e:
            self.drops.add(Transport.UDP, e.drop)
            log_event(log, "udp.dropped", reason=e.drop.value, why=e.reason, peer=addr[0],
                      level=logging.DEBUG)  # fmt: skip
            return
        try:
            self.on_receive(env, addr)
        except Exception:  # a consumer bug must not reach the event loop
            log.exception("gossip receive callback failed")

    def error_received(self, exc: Exception) -> None:
        log_event(log, "udp.error", error=str(exc), level=logging.DEBUG)
