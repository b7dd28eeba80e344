"""Mesh administration over mutual TLS (``Channel.ADMIN``): key ring changes, revocations and
certificate renewal. Messages are ``consensus.codec`` dataclasses; every request gets a reply.

Who may do what:

- the key ring changes only by a ``SignedRing``: a statement signed by the mesh CA (so only a CA
  holder can originate one; ``moltmesh.mesh.keyring.RingStatement``) whose generation is above
  the receiver's; anyone may relay it. A bare ``KeyOp`` (what versions before review9 sent, from
  any member) is refused, counted and logged; the type stays as the body of ``RelayKeyOp``;
- a revocation list is accepted only when signed by the mesh CA, from whoever relays it;
- only a CA holder answers a renewal, for the key of the connection's own certificate;
- any member may read another's signed ring (``SignedRingRequest``) to catch up after being
  away: the stream is mutual TLS, so only a current, non-revoked member can (``RingRequest``,
  the unsigned form, is still answered for older members but never adopted by this version);
- ``RelayKeyOp`` and ``Revoke`` come only from the node's own CLI (same certificate), which asks
  the running node to carry out a mesh-wide change.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from consensus.codec import U32, Codec

ADMIN_MAX_FRAME = 1 << 20


class AdminMsgType(enum.IntEnum):
    """APPEND-ONLY: the numbers are the protocol."""

    KEY_OP = 1
    REVOCATION = 2
    RENEW = 3
    RENEWED = 4
    REPLY = 5
    RELAY = 6
    REVOKE = 7
    MEMBERS = 8
    MEMBER_LIST = 9
    RING_REQUEST = 10
    RING_STATE = 11
    SIGNED_RING = 12
    SIGNED_RING_REQUEST = 13


class KeyOpKind(enum.IntEnum):
    """APPEND-ONLY."""

    INSTALL = 1
    USE = 2
    REMOVE = 3


ADMIN_CODEC: Codec[object] = Codec("admin", max_size=ADMIN_MAX_FRAME)


@ADMIN_CODEC.register(AdminMsgType.KEY_OP)
@dataclass(frozen=True, slots=True)
class KeyOp:
    kind: KeyOpKind
    key: bytes  # the key for INSTALL; empty otherwise
    key_id: U32  # the key id for USE and REMOVE (and of ``key`` for INSTALL)
    generation: U32 = 0  # ignored: the CA holder carrying the change assigns the generation


@ADMIN_CODEC.register(AdminMsgType.REVOCATION)
@dataclass(frozen=True, slots=True)
class RevocationUpdate:
    signed: bytes


@ADMIN_CODEC.register(AdminMsgType.RENEW)
@dataclass(frozen=True, slots=True)
class RenewRequest:
    csr: bytes


@ADMIN_CODEC.register(AdminMsgType.RENEWED)
@dataclass(frozen=True, slots=True)
class Renewed:
    cert: bytes


@ADMIN_CODEC.register(AdminMsgType.REPLY)
@dataclass(frozen=True, slots=True)
class AdminReply:
    ok: bool
    error: str


@ADMIN_CODEC.register(AdminMsgType.RELAY)
@dataclass(frozen=True, slots=True)
class RelayKeyOp:
    """Apply ``op`` and relay it to every member. Accepted only from the node itself (its CLI)."""

    op: KeyOp


@ADMIN_CODEC.register(AdminMsgType.REVOKE)
@dataclass(frozen=True, slots=True)
class Revoke:
    """Revoke ``node_id`` mesh-wide. Accepted only from the node itself, on a CA holder."""

    node_id: str


@ADMIN_CODEC.register(AdminMsgType.MEMBERS)
@dataclass(frozen=True, slots=True)
class MembersRequest:
    """Ask for the members as this node sees them (any member may ask)."""


@ADMIN_CODEC.register(AdminMsgType.MEMBER_LIST)
@dataclass(frozen=True, slots=True)
class MemberList:
    document: bytes  # JSON of ``moltmesh.mesh.http.members_document``


@ADMIN_CODEC.register(AdminMsgType.RING_REQUEST)
@dataclass(frozen=True, slots=True)
class RingRequest:
    """Ask a member for its key ring and revocation list (to catch up after being away)."""


@ADMIN_CODEC.register(AdminMsgType.RING_STATE)
@dataclass(frozen=True, slots=True)
class RingState:
    generation: U32
    keys: tuple[bytes, ...]
    primary: U32
    revocations: bytes  # the signed list, or empty


@ADMIN_CODEC.register(AdminMsgType.SIGNED_RING)
@dataclass(frozen=True, slots=True)
class SignedRing:
    """The mesh's key ring as the CA signed it, with the signed revocation list (either may be
    empty). Pushed by a CA holder after each change, and the answer to ``SignedRingRequest``;
    the receiver applies the revocations first, then the ring if newer."""

    statement: bytes
    revocations: bytes


@ADMIN_CODEC.register(AdminMsgType.SIGNED_RING_REQUEST)
@dataclass(frozen=True, slots=True)
class SignedRingRequest:
    """Ask a member for its signed ring and revocation list (answered with ``SignedRing``)."""


ADMIN_CODEC.check_schemas()
