"""Admission: a device with a join token gets its node certificate from a CA holder.

Over a TLS stream on which the joiner presents no certificate (``tls.join_client_context``),
envelopes on ``Channel.JOIN`` whose mesh id is the CA fingerprint from the token:

1. joiner → ``JoinHello(token id, node id)``; the CA holder refuses unknown, used or expired ids;
2. CA holder → ``JoinChallenge(CA certificate, mesh id, its clock)``; the joiner checks the CA
   certificate's fingerprint against the token, that the TLS server's certificate is issued by
   that CA, and that the clocks agree within ``max_clock_skew_s`` — *before* revealing anything;
3. joiner → ``JoinProof(secret, CSR)``; the CA holder checks the secret against its hash, marks
   the token used, and issues a certificate for the CSR's key (node id derived from the key);
4. CA holder → ``JoinGranted(certificate, key ring, primary key id, revocation list)``, or
   ``JoinRefused(reason)`` at any step.

The joiner stores its credentials (0600) only after checking the certificate it was given.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from cryptography import x509

from consensus.codec import U32, Codec
from consensus.errors import DecodeError
from moltmesh.config import MeshConfig
from moltmesh.identity import Identity, node_id_for
from moltmesh.logs import log_event
from moltmesh.mesh import ca, store, tls
from moltmesh.mesh.conn_limits import JOIN_HELLO_S
from moltmesh.mesh.drops import DropCounters, DropReason, Transport
from moltmesh.mesh.errors import (
    AdmissionError,
    CertificateError,
    ClockSkewError,
    CredentialError,
    TokenError,
)
from moltmesh.mesh.keyring import KeyRing, KeyRingError
from moltmesh.mesh.store import MeshState
from moltmesh.mesh.streams import close_writer
from moltmesh.mesh.tokens import JoinToken, split_address
from moltmesh.mesh.wire import (
    Channel,
    Envelope,
    EnvelopeError,
    decode_envelope,
    encode_frame,
    read_frame,
)

log = logging.getLogger("moltmesh.mesh.join")

JOIN_MAX_FRAME = 256 * 1024
M = TypeVar("M")


class JoinMsgType(enum.IntEnum):
    """APPEND-ONLY: the numbers are the protocol."""

    HELLO = 1
    CHALLENGE = 2
    PROOF = 3
    GRANTED = 4
    REFUSED = 5


JOIN_CODEC: Codec[object] = Codec("join", max_size=JOIN_MAX_FRAME)


@JOIN_CODEC.register(JoinMsgType.HELLO)
@dataclass(frozen=True, slots=True)
class JoinHello:
    token_id: str
    node_id: str


@JOIN_CODEC.register(JoinMsgType.CHALLENGE)
@dataclass(frozen=True, slots=True)
class JoinChallenge:
    ca_cert: bytes
    mesh_id: str
    server_time_us: int


@JOIN_CODEC.register(JoinMsgType.PROOF)
@dataclass(frozen=True, slots=True)
class JoinProof:
    secret: str
    csr: bytes


@JOIN_CODEC.register(JoinMsgType.GRANTED)
@dataclass(frozen=True, slots=True)
class JoinGranted:
    node_cert: bytes
    keys: tuple[bytes, ...]
    primary_key_id: U32
    revocations: bytes


@JOIN_CODEC.register(JoinMsgType.REFUSED)
@dataclass(frozen=True, slots=True)
class JoinRefused:
    reason: str


JOIN_CODEC.check_schemas()


JOIN_RETRY_FIRST_S = 0.5
JOIN_RETRY_MAX_S = 8.0
"""A CA holder busy with other joins (8 at once, 2 per address: devices behind one NAT or on
one provisioning bench) closes a joining connection before it challenges it; the joiner tries
again after a back-off doubling from the first to the most (about 15 s in all). The token is
not spent before the proof, so trying again is safe."""


class _ClosedBeforeChallenge(Exception):
    """The server closed the connection before it challenged the hello (busy, most likely)."""


async def _read(reader: asyncio.StreamReader, mesh: str, timeout: float) -> tuple[str, object]:
    payload = await asyncio.wait_for(read_frame(reader, JOIN_MAX_FRAME), timeout)
    if payload is None:
        raise EnvelopeError(DropReason.GARBAGE, "stream closed")
    env = decode_envelope(payload, mesh, JOIN_MAX_FRAME)
    if env.channel is not Channel.JOIN:
        raise EnvelopeError(DropReason.GARBAGE, f"unexpected channel {env.channel.name}")
    return env.sender, JOIN_CODEC.decode(env.body)


async def _write(writer: asyncio.StreamWriter, mesh: str, sender: str, msg: object) -> None:
    env = Envelope(mesh, Channel.JOIN, sender, JOIN_CODEC.encode(msg))
    writer.write(encode_frame(env, JOIN_MAX_FRAME))
    await writer.drain()


def refusal_reason(e: TokenError) -> DropReason:
    """The drop reason for a token refusal (``TokenStore.check``/``consume``)."""
    text = str(e)
    for mark, reason in (
        ("unknown join token", DropReason.JOIN_UNKNOWN_TOKEN),
        ("already used", DropReason.JOIN_TOKEN_USED),
        ("expired", DropReason.JOIN_TOKEN_EXPIRED),
        ("wrong join token secret", DropReason.JOIN_WRONG_SECRET),
    ):
        if mark in text:
            return reason
    return DropReason.JOIN_REFUSED


class JoinService:
    """The CA holder's side of admission; ``handle`` is a ``streams.JoinHandler``."""

    def __init__(
        self,
        state: MeshState,
        config: MeshConfig,
        drops: DropCounters,
        clock: Callable[[], float] = time.time,
        hello_timeout_s: float | None = None,
    ) -> None:
        """``hello_timeout_s``: how long a connection may wait before its hello (default
        ``conn_limits.JOIN_HELLO_S``, at most ``config.request_timeout_s``)."""
        self.clock = clock
        self.hello_timeout_s = (
            min(JOIN_HELLO_S, config.request_timeout_s) if hello_timeout_s is None
            else hello_timeout_s
        )  # fmt: skip
        if state.ca_key is None:
            raise CertificateError("only a CA holder can admit nodes")
        self.state = state
        self.config = config
        self.drops = drops
        self._lock = asyncio.Lock()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        pin = self.state.ca_fingerprint
        me = self.state.node_id
        timeout = self.config.request_timeout_s
        try:
            try:
                sender, hello = await _read(reader, pin, self.hello_timeout_s)
            except TimeoutError:
                self.drops.add(Transport.TCP, DropReason.JOIN_TIMEOUT)
                log_event(log, "join.no_hello", level=logging.DEBUG)
                return
            if not isinstance(hello, JoinHello) or hello.node_id != sender:
                raise EnvelopeError(DropReason.GARBAGE, "expected a hello")
            try:
                self.state.tokens().check(hello.token_id, self.clock())
            except TokenError as e:
                await self._refuse(writer, str(e), sender, refusal_reason(e))
                return
            challenge = JoinChallenge(
                ca.cert_der(self.state.ca_cert), self.state.mesh_id, int(self.clock() * 1e6)
            )
            await _write(writer, pin, me, challenge)
            sender2, proof = await _read(reader, pin, timeout)
            if not isinstance(proof, JoinProof) or sender2 != sender:
                raise EnvelopeError(DropReason.GARBAGE, "expected a proof")
            await self._grant(writer, hello, proof)
        except (EnvelopeError, DecodeError) as e:
            self.drops.add(Transport.TCP, getattr(e, "drop", DropReason.GARBAGE))
            log_event(log, "join.bad_input", why=e.reason)
        except (TimeoutError, OSError, ssl.SSLError, asyncio.IncompleteReadError):
            pass
        finally:
            await close_writer(writer)

    async def _refuse(
        self,
        writer: asyncio.StreamWriter,
        reason: str,
        who: str,
        drop: DropReason = DropReason.JOIN_REFUSED,
    ) -> None:
        """Count the refusal under ``drop``, log it and tell the joiner why."""
        self.drops.add(Transport.TCP, drop)
        log_event(log, "join.refused", node=who, reason=reason, drop=drop.value,
                  level=logging.WARNING)  # fmt: skip
        await _write(writer, self.state.ca_fingerprint, self.state.node_id, JoinRefused(reason))

    async def _grant(
        self, writer: asyncio.StreamWriter, hello: JoinHello, proof: JoinProof
    ) -> None:
        state = self.state
        assert state.ca_key is not None
        try:
            key = ca.csr_public_key(proof.csr)
        except CertificateError as e:
            await self._refuse(writer, str(e), hello.node_id)
            return
        node_id = node_id_for(ca.raw_public_key(key))
        if node_id != hello.node_id or state.is_revoked(node_id):
            reason = "revoked node" if state.is_revoked(node_id) else "node id does not match key"
            await self._refuse(writer, reason, hello.node_id)
            return
        async with self._lock:  # check-and-consume without interleaving
            try:
                state.tokens().consume(hello.token_id, proof.secret, self.clock(), node_id)
            except TokenError as e:
                await self._refuse(writer, str(e), node_id, refusal_reason(e))
                return
        cert = ca.issue_node_cert(
            state.ca_key, state.ca_cert, state.mesh_id, key,
            dt.datetime.fromtimestamp(self.clock(), dt.UTC),
            dt.timedelta(seconds=self.config.cert_lifetime_s),
            dt.timedelta(seconds=self.config.cert_backdate_s),
        )  # fmt: skip
        granted = JoinGranted(
            ca.cert_der(cert), tuple(state.keyring.keys()), state.keyring.primary_id,
            state.signed_revocations() or b"",
        )  # fmt: skip
        await _write(writer, state.ca_fingerprint, state.node_id, granted)
        log_event(log, "join.admitted", node=node_id)


async def join(
    token: JoinToken,
    identity: Identity,
    data_dir: Path,
    config: MeshConfig,
    rejoin: bool = False,
) -> MeshState:
    """Join the mesh of ``token``: prove the secret, get a certificate, store the credentials.

    Raises ``AdmissionError`` (refused, or the server is not the token's mesh),
    ``ClockSkewError`` (clocks too far apart; nothing was revealed), ``OSError`` or
    ``TimeoutError`` on network failure, ``CredentialError`` if this data directory already
    belongs to a mesh (with ``rejoin``: to another mesh than the token's).
    """
    if store.has_mesh(data_dir) and (
        not rejoin or store.load(data_dir).ca_fingerprint != token.ca_fingerprint
    ):
        raise CredentialError(f"{store.mesh_dir(data_dir)} already holds a mesh")
    pin, me = token.ca_fingerprint, identity.node_id
    timeout = config.request_timeout_s
    delay = JOIN_RETRY_FIRST_S
    while True:
        try:
            reader, writer, challenge = await _challenged(token, me, config)
            break
        except _ClosedBeforeChallenge:
            if delay > JOIN_RETRY_MAX_S:
                raise AdmissionError(
                    f"{token.address} closed the connection before answering, again and again "
                    "(busy with other devices joining?): try again later"
                ) from None
            await asyncio.sleep(delay)
            delay *= 2
    try:
        ca_cert = _check_server(challenge, token, tls.peer_certificate(writer), config)
        await _write(writer, pin, me, JoinProof(token.secret, ca.make_csr(identity.private_key)))
        granted = await _expect(reader, pin, timeout, JoinGranted)
        cert = ca.load_cert(granted.node_cert)
        try:
            got = ca.verify_node_cert(cert, ca_cert, ca.utcnow())
        except ClockSkewError:
            raise
        except CertificateError as e:
            raise AdmissionError(f"the issued certificate is unusable: {e}") from None
        if got != me:
            raise AdmissionError("the issued certificate names another node")
        try:
            ring = KeyRing(list(granted.keys), granted.primary_key_id)
        except KeyRingError as e:
            raise AdmissionError(f"the key ring sent is unusable: {e}") from None
        return store.store_joined(
            data_dir, challenge.mesh_id, ca_cert, cert, ring, granted.revocations or None,
            token.address, rejoin,
        )  # fmt: skip
    except (EnvelopeError, DecodeError, CertificateError) as e:
        if isinstance(e, ClockSkewError):
            raise
        raise AdmissionError(f"bad answer from {token.address}: {e}") from None
    except asyncio.IncompleteReadError:
        raise AdmissionError(f"{token.address} closed the connection") from None
    finally:
        await close_writer(writer)


async def _challenged(
    token: JoinToken, me: str, config: MeshConfig
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, JoinChallenge]:
    """Connect, say hello, and read the challenge. ``_ClosedBeforeChallenge`` when the server
    closed the connection instead (nothing else is retried); the connection is the caller's
    to close once this returns."""
    host, port = split_address(token.address)
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                host, port, ssl=tls.join_client_context(), server_hostname="",
                ssl_handshake_timeout=config.connect_timeout_s,
            ),
            config.connect_timeout_s,
        )  # fmt: skip
    except ConnectionResetError:  # refused at accept (the server's connection budgets)
        raise _ClosedBeforeChallenge() from None
    pin = token.ca_fingerprint
    try:
        await _write(writer, pin, me, JoinHello(token.token_id, me))
        return reader, writer, await _expect(reader, pin, config.request_timeout_s, JoinChallenge)
    except (EnvelopeError, asyncio.IncompleteReadError, ConnectionError) as e:
        await close_writer(writer)
        if isinstance(e, EnvelopeError) and str(e) != "stream closed":
            raise
        raise _ClosedBeforeChallenge() from None
    except BaseException:
        await close_writer(writer)
        raise


async def _expect(reader: asyncio.StreamReader, pin: str, timeout: float, kind: type[M]) -> M:
    _, msg = await _read(reader, pin, timeout)
    if isinstance(msg, JoinRefused):
        raise AdmissionError(f"refused: {msg.reason}")
    if not isinstance(msg, kind):
        raise AdmissionError(f"expected {kind.__name__}, got {type(msg).__name__}")
    return msg


def _check_server(
    challenge: JoinChallenge,
    token: JoinToken,
    server_cert: x509.Certificate | None,
    config: MeshConfig,
) -> x509.Certificate:
    """Pin the CA to the token's fingerprint, check the TLS server is a member, compare clocks."""
    ca_cert = ca.load_cert(challenge.ca_cert)
    if ca.fingerprint(ca_cert) != token.ca_fingerprint:
        raise AdmissionError("the server's CA does not match the token's fingerprint")
    if server_cert is None or not ca.signed_by(server_cert, ca_cert):
        raise AdmissionError("the server's certificate is not issued by the token's CA")
    ca.node_id_of(server_cert)
    skew = challenge.server_time_us / 1e6 - time.time()
    if abs(skew) > config.max_clock_skew_s:
        side = "behind" if skew > 0 else "ahead of"
        raise ClockSkewError(
            f"this device's clock is {abs(skew):.0f} s {side} the CA holder's "
            f"(more than mesh.max_clock_skew_s = {config.max_clock_skew_s:.0f} s): fix the clock",
            skew_s=skew,
        )
    return ca_cert
