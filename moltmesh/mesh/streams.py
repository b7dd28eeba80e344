"""Mutual-TLS TCP streams between members: a server, and a pool of reusable client connections.

A stream carries length-prefixed envelopes (``wire``). The server checks the peer after the
handshake (``tls.check_peer``) and then every envelope: right mesh, sender equal to the node id in
the peer's certificate, sender not revoked. Envelopes are handed, one at a time and in order, to
the handler of their channel; a handler's reply (if any) goes back on the same stream. The server
does not read the next envelope before the handler returns, so a slow handler back-pressures the
sender through TCP flow control; writes await ``drain()`` for the same reason.

The listener accepts plain TCP and does the TLS handshake itself, so that every connection is
admitted by ``conn_limits.ConnGate`` *before* the handshake (a budget for connections in the
handshake, per source address too) and every failed handshake is counted by reason
(``handshake_failure``). Connections without a client certificate go to ``join_handler`` when
one is set (CA holders) within their own small budget of join slots, and are closed otherwise.
Refusals and bad input are counted in ``DropCounters`` and close the stream; they are never
raised into the event loop.

Clients: ``request`` sends one envelope and waits for the reply; ``send``/``send_many`` send
without waiting for a reply (they await ``drain``); ``send_now`` writes at once, without awaiting
anything, when an idle pooled stream exists.
Connections are reused per node id and serialised by a lock (one request in flight per
connection). A stream whose peer closed it between requests is replaced once, transparently.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from moltmesh.config import MeshConfig
from moltmesh.logs import log_event
from moltmesh.mesh import ca, tls
from moltmesh.mesh.conn_limits import ConnGate, ConnLimits, Ticket
from moltmesh.mesh.drops import DropCounters, DropReason, Transport
from moltmesh.mesh.errors import AdmissionError, MeshError
from moltmesh.mesh.store import MeshState
from moltmesh.mesh.tokens import split_address
from moltmesh.mesh.wire import (
    Channel,
    Envelope,
    EnvelopeError,
    decode_envelope,
    encode_frame,
    read_frame,
)

log = logging.getLogger("moltmesh.mesh.streams")

SEND_NOW_BUFFER = 256 * 1024
"""``send_now`` writes only while less than this is waiting in the stream's write buffer."""
LISTEN_BACKLOG = 128
ACCEPT_BACKOFF_S = 0.1
"""After a failed accept (out of descriptors) the listener waits this long."""
ACCEPT_WARN_EVERY_S = 10.0
"""Failed accepts are logged as warnings at most this often (each one is counted)."""


@dataclass(frozen=True, slots=True)
class Peer:
    """The authenticated other end of a stream."""

    node_id: str
    address: str


Handler = Callable[[Peer, Envelope], Awaitable[bytes | None]]
JoinHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class StreamError(MeshError):
    """A request could not be completed: refused, closed, timed out or the peer is not who we
    expected. ``reason`` is short and stable enough to log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(eq=False)
class _Conn:
    node_id: str
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    used: int = 0

    def usable(self) -> bool:
        return not self.writer.is_closing() and not self.reader.at_eof()


async def close_writer(writer: asyncio.StreamWriter) -> None:
    """Close a stream, ignoring the errors a broken TLS connection reports while closing."""
    writer.close()
    with contextlib.suppress(OSError, ssl.SSLError, asyncio.TimeoutError):
        await asyncio.wait_for(writer.wait_closed(), 1.0)


class MeshStreams:
    """Server and client side of the mesh's TLS streams for one node."""

    def __init__(
        self,
        state: MeshState,
        config: MeshConfig,
        drops: DropCounters,
        handlers: dict[Channel, Handler] | None = None,
        join_handler: JoinHandler | None = None,
        limits: ConnLimits | None = None,
    ) -> None:
        self.state = state
        self.config = config
        self.drops = drops
        self.handlers: dict[Channel, Handler] = dict(handlers or {})
        self.join_handler = join_handler
        self._listeners: list[socket.socket] = []
        self._acceptors: set[asyncio.Task[None]] = set()
        self._conns: dict[str, _Conn] = {}
        self._connecting: dict[str, asyncio.Lock] = {}
        self._inbound: set[asyncio.StreamWriter] = set()
        self._inbound_peers: dict[asyncio.StreamWriter, str] = {}
        self._handlers: set[asyncio.Task[None]] = set()
        self.gate = ConnGate(limits or ConnLimits.from_config(config))
        self.bytes_in = 0  # TLS payload bytes (frames with their length prefix), not TLS records
        self.bytes_out = 0
        self.reload_tls()

    @property
    def node_id(self) -> str:
        return self.state.node_id

    def reload_tls(self) -> None:
        """Rebuild TLS contexts from the state (after a certificate renewal or CA import).

        New connections (both ways) use the new contexts; established ones keep theirs.
        """
        self._client_ctx = tls.client_context(self.state)
        self._server_ctx = tls.server_context(self.state, self.join_handler is not None)

    # -- server ---------------------------------------------------------------------------------

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Listen on ``host:port`` (0 = any free port); returns the bound address.

        Sockets are accepted by our own loop (``_accept_loop``): each is admitted by
        ``self.gate`` (or refused, reset and counted) while it is still a plain socket, before
        any byte is read; the TLS handshake then runs in its own task (``_serve``)."""
        self._listeners = _listen(host, port)
        for sock in self._listeners:
            task = asyncio.create_task(self._accept_loop(sock), name="mesh-accept")
            self._acceptors.add(task)
        sockname = self._listeners[0].getsockname()
        return sockname[0], sockname[1]

    async def close(self) -> None:
        """Stop listening; close every inbound and pooled connection."""
        for task in list(self._acceptors):
            task.cancel()
        await asyncio.gather(*self._acceptors, return_exceptions=True)
        self._acceptors.clear()
        for sock in self._listeners:
            sock.close()
        self._listeners = []
        for conn in list(self._conns.values()):
            await close_writer(conn.writer)
        self._conns.clear()
        for writer in list(self._inbound):
            await close_writer(writer)
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    def drop_peer(self, node_id: str) -> None:
        """Close every stream to and from ``node_id`` (called when it is revoked)."""
        conn = self._conns.pop(node_id, None)
        if conn is not None:
            conn.writer.close()
        for writer, peer in list(self._inbound_peers.items()):
            if peer == node_id:
                writer.close()

    async def _accept_loop(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        warned = -ACCEPT_WARN_EVERY_S
        while True:
            try:
                sock, addr = await loop.sock_accept(listener)
            except OSError as e:  # EMFILE/ENFILE/ENOBUFS: out of descriptors; back off a little
                now = loop.time()
                loud = now - warned >= ACCEPT_WARN_EVERY_S
                warned = now if loud else warned
                self._drop(DropReason.CONN_LIMIT, "stream.accept_failed", error=str(e),
                           level=logging.WARNING if loud else logging.DEBUG)  # fmt: skip
                await asyncio.sleep(ACCEPT_BACKOFF_S)
                continue
            self._admit(sock, str(addr[0]) if addr else "?")

    def _admit(self, sock: socket.socket, ip: str) -> None:
        """Admit an accepted socket (nothing read from it yet) or refuse it with a reset."""
        ticket = self.gate.open(ip)
        if isinstance(ticket, DropReason):
            _reset(sock)
            self._drop(ticket, "stream.refused", peer=ip, level=logging.DEBUG)
            return
        task = asyncio.create_task(self._serve(sock, ticket))
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)

    async def _handshake(
        self, sock: socket.socket, ip: str
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """Our side of the TLS handshake on an admitted socket; ``None`` (counted by reason,
        socket closed) when it fails or takes longer than ``gate.limits.handshake_s``."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        limit = self.gate.limits.handshake_s
        try:
            async with asyncio.timeout(limit + 1.0):  # the handshake's own timeout comes first
                transport, _ = await loop.connect_accepted_socket(
                    lambda: protocol, sock, ssl=self._server_ctx, ssl_handshake_timeout=limit
                )
        except (OSError, ssl.SSLError, TimeoutError, EOFError) as e:
            sock.close()  # no-op when the loop closed it already
            reason = handshake_failure(e)
            self._drop(reason, "stream.handshake_failed", peer=ip, why=str(e)[:200],
                       level=logging.DEBUG)  # fmt: skip
            return None
        return reader, asyncio.StreamWriter(transport, protocol, reader, loop)

    async def _serve(self, sock: socket.socket, ticket: Ticket) -> None:
        writer: asyncio.StreamWriter | None = None
        try:
            pair = await self._handshake(sock, ticket.ip)
            if pair is None:
                return
            reader, writer = pair
            self._inbound.add(writer)
            await self._serve_checked(reader, writer, ticket)
        except (TimeoutError, OSError, ssl.SSLError, asyncio.IncompleteReadError):
            pass  # the peer went away or stalled; nothing to answer
        except Exception:  # a handler bug must not take the server down
            log.exception("stream handler failed")
        finally:
            self.gate.close(ticket)
            if writer is not None:
                self._inbound.discard(writer)
                self._inbound_peers.pop(writer, None)
                await close_writer(writer)

    def _drop(
        self, reason: DropReason, event: str, level: int = logging.INFO, **fields: object
    ) -> None:
        self.drops.add(Transport.TCP, reason)
        log_event(log, event, reason=reason.value, level=level, **fields)

    async def _serve_checked(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ticket: Ticket
    ) -> None:
        cert = tls.peer_certificate(writer)
        if cert is None:
            if self.join_handler is None:  # CERT_REQUIRED makes this unreachable; be safe
                self._drop(DropReason.NO_CERT, "stream.refused", peer=ticket.ip)
                return
            refused = self.gate.join(ticket)
            if refused is not None:
                self._drop(refused, "stream.refused", peer=ticket.ip, level=logging.DEBUG)
                return
            # The join service bounds each step; this bounds the whole exchange.
            bound = self.gate.limits.join_hello_s + 2 * self.config.request_timeout_s + 1.0
            try:
                async with asyncio.timeout(bound):
                    await self.join_handler(reader, writer)
            except TimeoutError:
                self._drop(DropReason.JOIN_TIMEOUT, "stream.join_timeout", peer=ticket.ip)
            return
        self.gate.member(ticket)
        peer_addr = _address(writer)
        try:
            node_id = tls.check_peer(cert, self.state, ca.utcnow())
        except AdmissionError as e:
            reason = DropReason.REVOKED if e.reason == "revoked" else DropReason.WRONG_KEY
            self._drop(reason, "stream.refused", peer=peer_addr, why=e.reason)
            return
        self._inbound_peers[writer] = node_id
        peer = Peer(node_id, peer_addr)
        cfg = self.config
        while True:
            try:
                async with asyncio.timeout(cfg.idle_timeout_s):
                    payload = await read_frame(reader, cfg.max_frame_bytes)
                self.bytes_in += len(payload) + 4 if payload is not None else 0
                if payload is None:
                    return
                env = decode_envelope(payload, self.state.mesh_id, cfg.max_frame_bytes)
            except EnvelopeError as e:
                self._drop(e.drop, "stream.bad_frame", peer=node_id, why=e.reason)
                return
            if env.sender != node_id:
                self._drop(DropReason.GARBAGE, "stream.sender_mismatch", peer=node_id,
                           claimed=env.sender)  # fmt: skip
                return
            if self.state.is_revoked(node_id):
                self._drop(DropReason.REVOKED, "stream.refused", peer=node_id, why="revoked")
                return
            handler = self.handlers.get(env.channel)
            if handler is None:
                self._drop(DropReason.GARBAGE, "stream.no_handler", channel=env.channel.name)
                continue
            reply = await handler(peer, env)
            if reply is not None:
                writer.write(self._frame(env.channel, reply))
                async with asyncio.timeout(cfg.request_timeout_s):
                    await writer.drain()

    def _frame(self, channel: Channel, body: bytes) -> bytes:
        env = Envelope(self.state.mesh_id, channel, self.node_id, body)
        frame = encode_frame(env, self.config.max_frame_bytes)
        self.bytes_out += len(frame)
        return frame

    # -- client ---------------------------------------------------------------------------------

    async def _connect(self, address: str, expected: str | None) -> _Conn:
        host, port = split_address(address)
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    host, port, ssl=self._client_ctx, server_hostname="",
                    ssl_handshake_timeout=self.config.connect_timeout_s,
                ),
                self.config.connect_timeout_s,
            )  # fmt: skip
        except (TimeoutError, OSError, ssl.SSLError) as e:
            raise StreamError(f"cannot connect to {address}: {e}") from None
        try:
            cert = tls.peer_certificate(writer)
            node_id = tls.check_peer(cert, self.state, ca.utcnow(), expected)
        except AdmissionError as e:
            await close_writer(writer)
            raise StreamError(f"refused {address}: {e.reason}") from None
        return _Conn(node_id, reader, writer)

    async def _get(self, node_id: str | None, address: str) -> _Conn:
        if node_id is not None:
            conn = self._conns.get(node_id)
            if conn is not None and conn.usable():
                return conn
        lock = self._connecting.setdefault(node_id or address, asyncio.Lock())
        async with lock:
            if node_id is not None:
                conn = self._conns.get(node_id)
                if conn is not None and conn.usable():
                    return conn
            conn = await self._connect(address, node_id)
            old = self._conns.get(conn.node_id)
            if old is not None and old is not conn:
                old.writer.close()
            self._conns[conn.node_id] = conn
            return conn

    def _discard(self, conn: _Conn) -> None:
        if self._conns.get(conn.node_id) is conn:
            del self._conns[conn.node_id]
        conn.writer.close()

    async def request(
        self,
        node_id: str | None,
        address: str,
        channel: Channel,
        body: bytes,
        timeout: float | None = None,
    ) -> tuple[str, bytes]:
        """Send ``body`` to the node at ``address`` and return (its node id, its reply body).

        ``node_id`` is who must answer (``None`` for a seed whose id we do not know yet).
        Raises ``StreamError``; never returns data from anyone but an authenticated member.
        """
        timeout = self.config.request_timeout_s if timeout is None else timeout
        for attempt in (1, 2):
            conn = await self._get(node_id, address)
            reused = conn.used > 0
            async with conn.lock:
                try:
                    conn.used += 1
                    async with asyncio.timeout(timeout):  # cheaper than wait_for: no new task
                        conn.writer.write(self._frame(channel, body))
                        await conn.writer.drain()
                        payload = await read_frame(conn.reader, self.config.max_frame_bytes)
                    self.bytes_in += len(payload) + 4 if payload is not None else 0
                except TimeoutError:
                    self._discard(conn)
                    raise StreamError(f"{address}: no reply within {timeout} s") from None
                except (OSError, ssl.SSLError, EnvelopeError) as e:
                    self._discard(conn)
                    payload = None
                    if not reused or attempt == 2:
                        raise StreamError(f"{address}: stream failed: {e}") from None
                    continue
                if payload is None:
                    self._discard(conn)
                    if reused and attempt == 1:
                        continue  # the peer closed an idle stream: retry once on a new one
                    raise StreamError(f"{address}: the peer closed the stream (refused?)")
                try:
                    env = decode_envelope(payload, self.state.mesh_id, self.config.max_frame_bytes)
                except EnvelopeError as e:
                    self.drops.add(Transport.TCP, e.drop)
                    self._discard(conn)
                    raise StreamError(f"{address}: bad reply: {e.reason}") from None
                if env.sender != conn.node_id or env.channel != channel:
                    self.drops.add(Transport.TCP, DropReason.GARBAGE)
                    self._discard(conn)
                    raise StreamError(f"{address}: reply from the wrong sender or channel")
                return conn.node_id, env.body
        raise StreamError(f"{address}: stream failed")  # pragma: no cover (loop returns/raises)

    async def send(self, node_id: str | None, address: str, channel: Channel, body: bytes) -> str:
        """Send one envelope that expects no reply; returns the peer's node id."""
        return await self.send_many(node_id, address, [(channel, body)])

    async def send_many(
        self, node_id: str | None, address: str, items: list[tuple[Channel, bytes]]
    ) -> str:
        """Send envelopes that expect no reply, in order, as one write followed by one
        ``drain``; returns the peer's node id. Raises ``StreamError``."""
        conn = await self._get(node_id, address)
        async with conn.lock:
            try:
                async with asyncio.timeout(self.config.request_timeout_s):  # no task per send
                    conn.writer.write(b"".join(self._frame(ch, body) for ch, body in items))
                    await conn.writer.drain()
            except (TimeoutError, OSError, ssl.SSLError) as e:
                self._discard(conn)
                raise StreamError(f"{address}: send failed: {e}") from None
        return conn.node_id

    def send_now(self, node_id: str, channel: Channel, body: bytes) -> bool:
        """Write one envelope that expects no reply to the pooled stream to ``node_id`` at
        once, without waiting, when that stream is open, idle (no request or send holds it)
        and its write buffer is below ``SEND_NOW_BUFFER`` bytes; False otherwise (nothing was
        written: the caller falls back to ``send``). Latency-sensitive one-way traffic (Raft)
        uses it so a message leaves in the same event-loop turn it was produced in."""
        conn = self._conns.get(node_id)
        if conn is None or conn.lock.locked() or not conn.usable():
            return False
        transport = conn.writer.transport
        if transport.get_write_buffer_size() > SEND_NOW_BUFFER:
            return False
        try:
            conn.writer.write(self._frame(channel, body))
        except (OSError, ssl.SSLError, RuntimeError):
            self._discard(conn)
            return False
        return True


def _listen(host: str, port: int) -> list[socket.socket]:
    """Bound, listening, non-blocking TCP sockets for ``host:port`` (one per address family
    ``host`` resolves to, as ``asyncio.start_server`` does; IPv6 sockets are IPv6-only)."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                               flags=socket.AI_PASSIVE)  # fmt: skip
    out: list[socket.socket] = []
    seen: set[tuple[object, ...]] = set()
    try:
        for family, kind, proto, _, addr in infos:
            if (family, addr) in seen:
                continue
            seen.add((family, addr))
            try:
                sock = socket.socket(family, kind, proto)
            except OSError:  # a family this kernel lacks (no IPv6): skipped, as asyncio does
                continue
            out.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(out) > 1:  # every family on the port the first one got
                addr = (addr[0], out[0].getsockname()[1], *addr[2:])
            sock.bind(addr)
            sock.listen(LISTEN_BACKLOG)
            sock.setblocking(False)
    except OSError:
        for sock in out:
            sock.close()
        raise
    if not out:
        raise OSError(f"no address family of {host!r} can be listened on here")
    return out


def _reset(sock: socket.socket) -> None:
    """Close a socket with a TCP reset (no FIN handshake, no TIME_WAIT kept here)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


_NOT_TLS = (
    "WRONG_VERSION_NUMBER", "HTTP_REQUEST", "UNKNOWN_PROTOCOL", "UNSUPPORTED_PROTOCOL",
    "RECORD_LAYER", "PACKET_LENGTH_TOO_LONG", "NO_SHARED_CIPHER", "UNEXPECTED_RECORD",
    "VERSION_TOO_LOW", "HTTPS_PROXY_REQUEST", "BAD_PACKET_LENGTH", "UNEXPECTED_MESSAGE",
)  # fmt: skip


def handshake_failure(e: BaseException) -> DropReason:
    """The drop reason for a failed server-side TLS handshake."""
    if isinstance(e, ssl.SSLCertVerificationError):
        return DropReason.BAD_CERT
    if isinstance(e, TimeoutError) or (
        isinstance(e, ConnectionAbortedError) and "taking longer" in str(e)
    ):  # asyncio aborts a handshake past ssl_handshake_timeout with ConnectionAbortedError
        return DropReason.HANDSHAKE_TIMEOUT
    if isinstance(e, ssl.SSLError):
        text = f"{e.reason or ''} {e}".upper()
        if "PEER_DID_NOT_RETURN_A_CERTIFICATE" in text or "CERTIFICATE_REQUIRED" in text:
            return DropReason.NO_CERT
        if "CERTIFICATE_VERIFY_FAILED" in text or "UNKNOWN_CA" in text:
            return DropReason.BAD_CERT
        if any(mark in text for mark in _NOT_TLS):
            return DropReason.NOT_TLS
    return DropReason.TLS_FAILED


def _address(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    if not peer:
        return "?"
    host, port = peer[0], peer[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
