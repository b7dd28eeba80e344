"""Mesh administration over mutual TLS (``Channel.ADMIN``): key ring changes, revocations and
certificate renewal. Messages are ``consensus.codec`` dataclasses; every request gets a reply.

Who may do what:

- any member that is not revoked may change the key ring (as in Serf, where any member can run
  ``keys install|use|remove``); changes are idempotent, so relaying them is safe;
- a revocation list is accepted only when signed by the mesh CA, from whoever relays it;
- only a CA holder answers a renewal, for the key of the connection's own certificate;
- any member may read another's key ring (``RingRequest``) to catch up after being away: the
  stream is mutual TLS, so only a current, non-revoked member can;
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
    generation: U32 = 0  # mesh-wide order of ring changes (0: the originator assigns the next)


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


ADMIN_CODEC.check_schemas()
