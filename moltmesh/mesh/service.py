"""``MeshService``: one node's mesh endpoint — TLS streams, sealed gossip, admission, admin.

    service = MeshService(data_dir, config.mesh)
    await service.start()          # needs credentials (``mesh init`` or a join)
    service.streams.handlers[Channel.RAFT] = ...   # other layers register stream handlers
    service.on_gossip = ...        # and receive gossip envelopes
    await service.stop()

The TCP streams and the UDP gossip socket share one port number. While running, the stream
address is written to ``<data dir>/mesh/stream-address`` so the CLI can reach the running node
(over mutual TLS, with the node's own certificate).

Key ring changes and revocations come from a CA holder only: it applies them, persists them and
pushes them, signed by the mesh CA, to ``peers()`` (the SWIM driver supplies the live members;
until then, peers added with ``add_peer``). Members adopt only what the CA signed, whoever relays
it (see ``moltmesh.mesh.admin`` for who may ask what).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from prometheus_client.core import CounterMetricFamily

from consensus.errors import ConsensusError, DecodeError
from moltmesh.config import MeshConfig
from moltmesh.identity import (
    NODE_ID_CHARS,
    load_or_create_identity,
    node_id_for,
    write_private,
)
from moltmesh.logs import log_event
from moltmesh.mesh import ca, store
from moltmesh.mesh.admin import (
    ADMIN_CODEC,
    AdminReply,
    KeyOp,
    KeyOpKind,
    MemberList,
    MembersRequest,
    RelayKeyOp,
    Renewed,
    RenewRequest,
    RevocationUpdate,
    Revoke,
    RingRequest,
    RingState,
    SignedRing,
    SignedRingRequest,
)
from moltmesh.mesh.advertise import guess_host, is_wildcard
from moltmesh.mesh.drops import DropCounters
from moltmesh.mesh.errors import CertificateError, MeshError, RevocationError
from moltmesh.mesh.join import JoinService
from moltmesh.mesh.keyring import (
    MAX_GENERATION,
    KeyRingError,
    RingStatement,
    format_key_id,
    generate_key,
    key_id,
)
from moltmesh.mesh.store import MeshState
from moltmesh.mesh.streams import MeshStreams, Peer, StreamError
from moltmesh.mesh.udp import GossipTransport, Receive
from moltmesh.mesh.wire import Channel, Envelope

log = logging.getLogger("moltmesh.mesh.service")

ADDRESS_FILE = "stream-address"
SYNC_INTERVAL_S = 2.0  # at most one key ring catch-up per this many seconds


def is_node_id(text: str) -> bool:
    return len(text) == NODE_ID_CHARS and set(text) <= set("abcdefghijklmnopqrstuvwxyz234567")


def _ed_public(state: MeshState) -> Ed25519PublicKey:
    key = state.ca_cert.public_key()
    if not isinstance(key, Ed25519PublicKey):
        raise CertificateError("the mesh CA key is not Ed25519")
    return key


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class MeshService:
    """The mesh endpoint of one node. Not thread-safe; one event loop."""

    def __init__(
        self,
        data_dir: Path,
        config: MeshConfig,
        drops: DropCounters | None = None,
        peers: Callable[[], dict[str, str]] | None = None,
        state: MeshState | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.config = config
        self.drops = drops or DropCounters()
        self.state = state or store.load(data_dir)
        self.static_peers: dict[str, str] = {}
        self._peers = peers or (lambda: dict(self.static_peers))
        self.on_gossip: Receive = lambda env, addr: None
        self.members_document: Callable[[], bytes] | None = None  # JSON; set by MeshRuntime
        join = JoinService(self.state, config, self.drops) if self.state.ca_key else None
        self.streams = MeshStreams(
            self.state, config, self.drops, {Channel.ADMIN: self._admin},
            join.handle if join else None,
        )  # fmt: skip
        self.gossip: GossipTransport | None = None
        self.address = ""
        self._renewer: asyncio.Task[None] | None = None
        self._sync_task: asyncio.Task[None] | None = None
        self._last_sync = -SYNC_INTERVAL_S
        self.refused: dict[str, int] = {}
        """Admin requests refused by kind (a ``KeyOp`` from a member, a foreign ``RelayKeyOp``)."""
        if self.state.keyring.note:
            log_event(log, "mesh.keyring_repaired", note=self.state.keyring.note,
                      level=logging.WARNING)  # fmt: skip

    @property
    def node_id(self) -> str:
        return self.state.node_id

    def set_peer_source(self, peers: Callable[[], dict[str, str]]) -> None:
        """Where ``peers()`` comes from (the SWIM driver's live members once it runs)."""
        self._peers = peers

    def add_peer(self, node_id: str, address: str) -> None:
        self.static_peers[node_id] = address

    def peers(self) -> dict[str, str]:
        """Members to relay admin changes to: node id -> stream address (not us, not revoked)."""
        return {
            n: a for n, a in sorted(self._peers().items())
            if n != self.node_id and not self.state.is_revoked(n)
        }  # fmt: skip

    async def start(self, host: str | None = None, port: int | None = None) -> str:
        """Listen (TCP streams and UDP gossip on one port); returns the ``host:port`` address."""
        ca.check_validity(self.state.node_cert, ca.utcnow(), "node certificate")
        host = self.config.host if host is None else host
        port = self.config.port if port is None else port
        bound_host, bound_port = await self.streams.start(host, port)
        epoch = store.next_boot_epoch(self.data_dir, time.time())
        ahead = epoch - time.time()
        if ahead > self.config.max_clock_skew_s:  # written while the clock was wrong: peers drop us
            log_event(log, "mesh.boot_epoch_ahead", epoch=epoch, ahead_s=round(ahead),
                      fix="members drop this node's gossip until the clock passes the epoch; "
                          "with the clock right, rotate the gossip key, then delete "
                          f"{store.mesh_dir(self.data_dir) / 'boot-epoch'}",
                      level=logging.ERROR)  # fmt: skip
        self.gossip = GossipTransport(
            self.state.mesh_id, self.node_id, self.state.keyring, epoch, self.drops,
            lambda env, addr: self.on_gossip(env, addr), self.state.is_revoked,
            self.config.max_datagram_bytes, self.config.replay_window,
        )  # fmt: skip
        self.gossip.opener.on_unknown_key = self._on_unknown_key
        self.gossip.opener.max_epoch_skew_s = self.config.max_clock_skew_s  # (one clock rule)
        try:
            await self.gossip.start(bound_host, bound_port)
        except OSError:
            await self.streams.close()
            raise
        guessed = not self.config.advertise and is_wildcard(bound_host)
        if self.config.advertise:
            self.address = self.config.advertise
        elif guessed:  # never 0.0.0.0: a peer would send to itself
            contacts = [c for c in (*self.config.seeds, self.state.ca_address) if c]
            self.address = format_address(await guess_host(contacts), bound_port)
        else:
            self.address = format_address(bound_host, bound_port)
        write_private(self.state.dir / ADDRESS_FILE, f"{self.address}\n".encode())
        self._renewer = asyncio.create_task(self._renew_loop())
        log_event(log, "mesh.started", node=self.node_id, mesh=self.state.mesh_id,
                  address=self.address, guessed=guessed, ca_holder=self.state.ca_key is not None,
                  listen=format_address(bound_host, bound_port))  # fmt: skip
        return self.address

    async def stop(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
            self._renewer = None
        if self._sync_task is not None:
            self._sync_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sync_task
        if self.gossip is not None:
            self.gossip.close()
            self.gossip = None
        await self.streams.close()
        (self.state.dir / ADDRESS_FILE).unlink(missing_ok=True)

    # -- admin requests from other members ------------------------------------------------------

    async def _admin(self, peer: Peer, env: Envelope) -> bytes:
        """Answer one admin request; every failure, codec errors included, is an error reply."""
        try:
            msg = ADMIN_CODEC.decode(env.body)
        except DecodeError as e:
            return ADMIN_CODEC.encode(AdminReply(False, f"bad request: {e.reason}"))
        try:
            return await self._admin_request(peer, msg)
        except (MeshError, KeyRingError, ConsensusError) as e:
            log_event(log, "mesh.admin_failed", peer=peer.node_id, request=type(msg).__name__,
                      error=str(e), level=logging.WARNING)  # fmt: skip
            return ADMIN_CODEC.encode(AdminReply(False, str(e)[:1000]))

    def refusals_family(self) -> CounterMetricFamily:
        """``moltmesh_mesh_admin_refused_total{request}``: admin requests refused to a member
        that may not make them (a bare ``KeyOp``, another node's ``RelayKeyOp``/``Revoke``)."""
        family = CounterMetricFamily(
            "moltmesh_mesh_admin_refused",
            "Mesh admin requests refused because the sender may not make them, by request.",
            labels=["request"],
        )
        for kind in ("KeyOp", "RelayKeyOp", "Revoke"):
            family.add_metric([kind], self.refused.get(kind, 0))
        return family

    def _refuse(self, peer: Peer, msg: object, why: str) -> bytes:
        """Count and log a request ``peer`` may not make; the reply says why."""
        kind = type(msg).__name__
        self.refused[kind] = self.refused.get(kind, 0) + 1
        log_event(log, "mesh.admin_refused", peer=peer.node_id, request=kind, why=why,
                  level=logging.WARNING)  # fmt: skip
        return ADMIN_CODEC.encode(AdminReply(False, why))

    async def _admin_request(self, peer: Peer, msg: object) -> bytes:
        if isinstance(msg, KeyOp):
            return self._refuse(peer, msg, "key ring changes must be signed by the mesh CA")
        if isinstance(msg, SignedRing):
            if not self.apply_signed(msg) and msg.statement:
                theirs = RingStatement.parse(msg.statement)[0].generation
                ring = self.state.keyring
                if theirs < ring.generation:  # a pusher that is behind should know
                    stale = f"stale key ring: generation {theirs} < ours {ring.generation}"
                    return ADMIN_CODEC.encode(AdminReply(False, stale))
                if msg.statement != ring.signed:  # split from ours at the same generation
                    why = f"key ring not adopted: another ring holds generation {theirs}"
                    return ADMIN_CODEC.encode(AdminReply(False, why))
        elif isinstance(msg, RevocationUpdate):
            self.apply_revocations(msg.signed)
        elif isinstance(msg, RenewRequest):
            return ADMIN_CODEC.encode(self._renew_for(peer, msg))
        elif isinstance(msg, SignedRingRequest):
            return ADMIN_CODEC.encode(self.signed_ring())
        elif isinstance(msg, RingRequest):  # older members; never adopted by this version
            return ADMIN_CODEC.encode(self.ring_state())
        elif isinstance(msg, MembersRequest):
            if self.members_document is None:
                return ADMIN_CODEC.encode(AdminReply(False, "membership is not running"))
            return ADMIN_CODEC.encode(MemberList(self.members_document()))
        elif isinstance(msg, RelayKeyOp | Revoke):
            if peer.node_id != self.node_id:
                return self._refuse(peer, msg, "only this node's own CLI may")
            if self.state.ca_key is None:
                return self._refuse(
                    peer, msg, "only a CA holder changes the mesh's key ring or revokes: run the "
                    "command on the CA holder (see `moltmesh mesh ca import`)",
                )  # fmt: skip
            if isinstance(msg, Revoke):
                results = await self.revoke(msg.node_id)
            else:
                results = await self.key_op(msg.op)
            failed = {n: e for n, e in results.items() if e}
            summary = "; ".join(f"{n}: {e}" for n, e in failed.items())
            return ADMIN_CODEC.encode(AdminReply(not failed, summary))
        else:
            return ADMIN_CODEC.encode(AdminReply(False, "not a request"))
        return ADMIN_CODEC.encode(AdminReply(True, ""))

    def apply_key_op(self, op: KeyOp) -> bool:
        """Apply one key ring change to this device's ring and persist it; False when it changes
        nothing (the key already installed / already primary / not there to remove).

        On a CA holder the change is the mesh's: it gets the next generation and the CA's
        signature (``KeyRingError`` when the generation would pass ``MAX_GENERATION``).
        Elsewhere it is local only (the CLI with no node running): the next signed ring from a
        CA holder replaces it. ``op.generation`` is ignored.
        """
        ring = self.state.keyring
        ca_key = self.state.ca_key
        if ca_key is not None and ring.generation >= MAX_GENERATION:
            raise KeyRingError(f"key ring generation {ring.generation} is exhausted")
        if op.kind is KeyOpKind.INSTALL:
            if key_id(op.key) != op.key_id:
                raise KeyRingError("key id does not match the key")
            if op.key_id in self.state.revocations.retired_keys:
                raise KeyRingError(f"key {format_key_id(op.key_id)} was retired by a revocation")
            if ring.has(op.key):
                return False
            ring.install(op.key)
        elif op.kind is KeyOpKind.USE:
            if ring.primary_id == op.key_id and ring.get(op.key_id) is not None:
                return False
            ring.use(op.key_id)
        elif op.kind is KeyOpKind.REMOVE:
            if ring.get(op.key_id) is None:
                return False
            ring.remove(op.key_id)
        if ca_key is not None:
            self._sign_ring(ca_key)
        self.state.save_keyring()
        log_event(log, "mesh.keyring", op=op.kind.name.lower(), key=format_key_id(op.key_id),
                  generation=ring.generation, signed=ca_key is not None)  # fmt: skip
        return True

    def _sign_ring(self, ca_key: Ed25519PrivateKey) -> None:
        """Our ring as it is now becomes the mesh's, at the next generation (not yet saved)."""
        ring = self.state.keyring
        generation = ring.generation + 1
        ring.signed = RingStatement.of(ring, self.state.mesh_id, generation).sign(ca_key)
        ring.generation = generation

    def apply_signed(self, msg: SignedRing) -> bool:
        """Adopt a ``SignedRing``: its revocations (if newer), then its statement when it is
        signed by our CA, of our mesh, and of a higher generation than ours (retired keys are
        dropped after). True when our ring changed. ``KeyRingError``/``RevocationError`` when
        a part does not verify (nothing of that part is applied)."""
        if msg.revocations:
            self.apply_revocations(msg.revocations, retire=False)
        st = None
        if msg.statement:
            st = RingStatement.verify(msg.statement, _ed_public(self.state), self.state.mesh_id)
        ring = self.state.keyring
        if st is None or st.generation <= ring.generation:
            self._retire_keys()
            return False
        for key in st.keys:
            ring.install(key)
        ring.use(st.primary)
        keep = {key_id(k) for k in st.keys}
        for info in ring.list():
            if info.key_id not in keep:
                ring.remove(info.key_id)
        ring.generation = st.generation
        ring.signed = msg.statement
        self._retire_keys()
        self.state.save_keyring()
        log_event(log, "mesh.keyring_adopted", generation=ring.generation,
                  primary=format_key_id(ring.primary_id))  # fmt: skip
        return True

    def signed_ring(self) -> SignedRing:
        return SignedRing(self.state.keyring.signed, self.state.signed_revocations() or b"")

    def apply_revocations(self, signed: bytes, retire: bool = True) -> None:
        """Adopt a CA-signed revocation list (if newer): drop streams of newly revoked nodes and
        (with ``retire``) every gossip key it retires (the primary only once another key can
        take over)."""
        before = set(self.state.revocations.revoked)
        rl = self.state.save_revocations(signed)
        for node_id in sorted(set(rl.revoked) - before):
            self.streams.drop_peer(node_id)
            log_event(log, "mesh.revoked", node=node_id, serial=rl.serial)
        if retire:
            self._retire_keys()

    def _retire_keys(self) -> None:
        ring = self.state.keyring
        retired = set(self.state.revocations.retired_keys)
        held = {k.key_id for k in ring.list()}
        if not retired & held:
            return
        if ring.primary_id in retired:
            spare = sorted(held - retired)
            if not spare:  # the replacement key has not reached us yet (a sync will bring it)
                log_event(log, "mesh.primary_retired", key=format_key_id(ring.primary_id),
                          level=logging.WARNING)  # fmt: skip
                return
            ring.use(spare[0])
        for kid in sorted(retired & held):
            if kid != ring.primary_id:
                ring.remove(kid)
        self.state.save_keyring()

    def ring_state(self) -> RingState:
        ring = self.state.keyring
        return RingState(ring.generation, tuple(ring.keys()), ring.primary_id,
                         self.state.signed_revocations() or b"")  # fmt: skip

    async def sync_from(self, node_id: str, address: str) -> bool:
        """Fetch ``node_id``'s signed ring and revocations over mutual TLS and adopt them
        (``apply_signed``): a member can hand on only what the CA signed."""
        body = ADMIN_CODEC.encode(SignedRingRequest())
        _, raw = await self.streams.request(node_id, address, Channel.ADMIN, body)
        reply = ADMIN_CODEC.decode(raw)
        return isinstance(reply, SignedRing) and self.apply_signed(reply)

    def _on_unknown_key(self, sender: str, kid: int) -> None:
        """A datagram from ``sender`` under a key we lack: it may hold a newer ring; catch up."""
        now = time.monotonic()
        if (
            (self._sync_task is not None and not self._sync_task.done())
            or now - self._last_sync < SYNC_INTERVAL_S
            or kid in self.state.revocations.retired_keys
        ):  # fmt: skip
            return
        address = self.peers().get(sender)
        if address is None:
            return
        self._last_sync = now
        self._sync_task = asyncio.create_task(self._sync_logged(sender, address))

    async def _sync_logged(self, node_id: str, address: str) -> None:
        try:
            await self.sync_from(node_id, address)
        except (StreamError, ConsensusError, MeshError, KeyRingError) as e:
            log_event(log, "mesh.sync_failed", peer=node_id, error=str(e), level=logging.DEBUG)

    def _renew_for(self, peer: Peer, req: RenewRequest) -> Renewed | AdminReply:
        if self.state.ca_key is None:
            return AdminReply(False, "not a CA holder")
        key = ca.csr_public_key(req.csr)
        node_id = node_id_for(ca.raw_public_key(key))
        if node_id != peer.node_id:
            return AdminReply(False, "a node renews only its own certificate")
        cert = self._issue(key)
        log_event(log, "mesh.renewed_for", node=node_id)
        return Renewed(ca.cert_der(cert))

    def _issue(self, key: Ed25519PublicKey) -> x509.Certificate:
        assert self.state.ca_key is not None
        return ca.issue_node_cert(
            self.state.ca_key, self.state.ca_cert, self.state.mesh_id, key,
            ca.utcnow(), dt.timedelta(seconds=self.config.cert_lifetime_s),
            dt.timedelta(seconds=self.config.cert_backdate_s),
        )  # fmt: skip

    # -- operations started here, relayed to every member ---------------------------------------

    async def broadcast(self, body: bytes) -> dict[str, str | None]:
        """Send an admin request to every peer; node id -> error text (``None`` when applied)."""
        peers = self.peers()

        async def one(node_id: str, address: str) -> str | None:
            try:
                _, raw = await self.streams.request(node_id, address, Channel.ADMIN, body)
                reply = ADMIN_CODEC.decode(raw)
            except (StreamError, DecodeError) as e:
                return str(e)
            if not isinstance(reply, AdminReply):
                return "unexpected reply"
            return None if reply.ok else reply.error

        results = await asyncio.gather(*(one(n, a) for n, a in peers.items()))
        return dict(zip(peers, results, strict=True))

    async def key_op(self, op: KeyOp) -> dict[str, str | None]:
        """CA holders only: apply ``op`` here (next generation, signed), then push the signed
        ring to every peer. Node id -> error (``None`` = adopted); empty when ``op`` changed
        nothing."""
        if self.state.ca_key is None:
            raise CertificateError("only a CA holder can change the mesh's key ring")
        _, highest = await self.catch_up()
        ring = self.state.keyring
        before, changed = ring.generation, False
        ring.generation = max(before, highest)  # the change is signed past every ring seen
        try:
            changed = self.apply_key_op(op)
        finally:
            if not changed:
                ring.generation = before
        if not changed:
            return {}
        return await self.broadcast(ADMIN_CODEC.encode(self.signed_ring()))

    async def catch_up(self) -> tuple[set[int], int]:
        """Before a CA holder changes the mesh's ring: adopt the newest signed ring any reachable
        peer holds, and go past every generation seen, so that the change supersedes them all (a
        CA holder restored from an older backup, or a second one that was away, would otherwise
        sign a generation the members already hold, and they would keep their ring). Returns
        the key ids of every ring seen (a revocation retires them all) and the highest
        generation seen (the next change must be signed above it)."""
        ring = self.state.keyring
        seen = {k.key_id for k in ring.list()}
        peers = self.peers()

        async def fetch(node_id: str, address: str) -> object:
            body = ADMIN_CODEC.encode(SignedRingRequest())
            _, raw = await self.streams.request(node_id, address, Channel.ADMIN, body)
            return ADMIN_CODEC.decode(raw)

        replies = await asyncio.gather(*(fetch(n, a) for n, a in peers.items()),
                                       return_exceptions=True)  # fmt: skip
        highest = ring.generation
        for node_id, reply in zip(peers, replies, strict=True):
            if not isinstance(reply, SignedRing) or not reply.statement:
                if isinstance(reply, BaseException):
                    log_event(log, "mesh.catch_up_failed", peer=node_id, error=str(reply),
                              level=logging.DEBUG)  # fmt: skip
                continue
            try:
                st = RingStatement.verify(reply.statement, _ed_public(self.state),
                                          self.state.mesh_id)  # fmt: skip
                self.apply_signed(reply)
            except (KeyRingError, RevocationError) as e:
                log_event(log, "mesh.catch_up_failed", peer=node_id, error=str(e),
                          level=logging.WARNING)  # fmt: skip
                continue
            highest = max(highest, st.generation)
            seen.update(key_id(k) for k in st.keys)
        return seen, highest

    async def revoke(self, node_id: str) -> dict[str, str | None]:
        """CA holders only: refuse ``node_id`` everywhere and rotate the gossip key without it.

        One step, prepared here before anything is sent: a new revocation list (retiring every
        key ``node_id`` knew) and a new signed ring holding only a fresh key, applied and saved
        here, then pushed together in one ``SignedRing`` to every other member, which applies
        the list and then the ring without yielding in between. So no member hands the new key
        to ``node_id`` and none keeps an old key once it has the list. A local failure raises
        before anything is published. Returns the failures by node id (``None`` = applied).
        """
        ca_key = self.state.ca_key
        if ca_key is None:
            raise CertificateError("only a CA holder can revoke a node")
        if not is_node_id(node_id) or node_id == self.node_id:
            raise CertificateError(f"{node_id!r} is not another node's id (16 base32 chars)")
        seen, highest = await self.catch_up()
        ring = self.state.keyring
        generation = max(ring.generation, highest) + 1
        if generation > MAX_GENERATION:
            raise KeyRingError(f"key ring generation {generation - 1} is exhausted")
        old_keys = tuple(sorted(seen | {k.key_id for k in ring.list()}))  # all node_id may know
        rl = self.state.revocations.adding(node_id, time.time_ns() // 1000, old_keys)
        signed_rl = rl.sign(ca_key)
        new_key = generate_key()
        statement = RingStatement(self.state.mesh_id, generation, (new_key,),
                                  key_id(new_key)).sign(ca_key)  # fmt: skip
        push = SignedRing(statement, signed_rl)
        body = ADMIN_CODEC.encode(push)
        self.apply_signed(push)
        results = await self.broadcast(body)
        log_event(log, "mesh.revoke_done", node=node_id, key=format_key_id(key_id(new_key)),
                  failures=sum(1 for e in results.values() if e))  # fmt: skip
        return results

    # -- certificate renewal --------------------------------------------------------------------

    async def renew_if_due(self, now: dt.datetime | None = None) -> bool:
        """Renew our certificate when ⅔ of its validity has passed; True when renewed."""
        now = now or ca.utcnow()
        if now < ca.renewal_time(self.state.node_cert):
            return False
        identity = load_or_create_identity(self.data_dir)
        if self.state.ca_key is not None:
            cert = self._issue(identity.private_key.public_key())
        else:
            if not self.state.ca_address:
                raise CertificateError("no CA holder address known to renew the certificate")
            body = ADMIN_CODEC.encode(RenewRequest(ca.make_csr(identity.private_key)))
            _, raw = await self.streams.request(None, self.state.ca_address, Channel.ADMIN, body)
            reply = ADMIN_CODEC.decode(raw)
            if not isinstance(reply, Renewed):
                reason = reply.error if isinstance(reply, AdminReply) else "unexpected reply"
                raise CertificateError(f"renewal refused: {reason}")
            cert = ca.load_cert(reply.cert)
            if ca.verify_node_cert(cert, self.state.ca_cert, ca.utcnow()) != self.node_id:
                raise CertificateError("renewed certificate names another node")
        self.state.save_node_cert(cert)
        self.streams.reload_tls()
        log_event(log, "mesh.cert_renewed", node=self.node_id,
                  until=self.state.node_cert.not_valid_after_utc.isoformat())  # fmt: skip
        return True

    async def _renew_loop(self) -> None:
        while True:
            try:
                await self.renew_if_due()
            except (MeshError, StreamError, DecodeError, OSError, RevocationError) as e:
                log_event(log, "mesh.renew_failed", error=str(e), level=logging.WARNING)
            await asyncio.sleep(self.config.renew_check_s)
