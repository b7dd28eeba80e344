"""Raft's typed messages, log entries and persisted records, and their wire codec.

Every message is a frozen, slotted dataclass carrying ``src``, ``dst`` and ``term`` first. They
pass between cores as objects; ``RAFT_CODEC.encode`` / ``RAFT_CODEC.decode`` turn them into bytes
(one type byte + msgpack body, see ``consensus.codec``) for the network, and also encode the
records a driver persists (``Entry``, ``HardState``, ``ConfState``).

``RaftMsgType`` is APPEND-ONLY: its numbers are the protocol. Never renumber or reuse a value;
add new message types with new numbers and new fields only at the end of a class.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from consensus.codec import U64, Codec
from consensus.core import NodeId

RAFT_MAX_FRAME = 8 * 1024 * 1024
"""Hard limit on one encoded Raft frame; ``RaftConfig.max_bytes_per_msg`` must stay below it."""

RAFT_CODEC: Codec[object] = Codec("raft", max_size=RAFT_MAX_FRAME)


class RaftMsgType(enum.IntEnum):
    """One-byte type ids of Raft's wire records. APPEND-ONLY: the numbers are the protocol."""

    PRE_VOTE = 1
    PRE_VOTE_RESPONSE = 2
    VOTE = 3
    VOTE_RESPONSE = 4
    APPEND = 5
    APPEND_RESPONSE = 6
    HEARTBEAT = 7
    HEARTBEAT_RESPONSE = 8
    # 9-31 reserved for the next messages (InstallSnapshot, TimeoutNow, ReadIndex, forwarding).
    # Persisted records (not sent between peers, but encoded the same way by drivers):
    ENTRY = 64
    HARD_STATE = 65
    CONF_STATE = 66


class EntryKind(enum.IntEnum):
    """What a log entry carries. APPEND-ONLY (persisted and sent on the wire)."""

    NORMAL = 0
    """Application data proposed by a client."""
    NOOP = 1
    """Empty entry a new leader appends at the start of its term, so it can commit."""
    CONFIG = 2
    """A membership change (reserved for the membership-change issue)."""


@RAFT_CODEC.register(RaftMsgType.ENTRY)
@dataclass(frozen=True, slots=True)
class Entry:
    """One log entry. ``index`` ≥ 1; ``term`` is the leader's term when it was created."""

    index: U64
    term: U64
    kind: EntryKind = EntryKind.NORMAL
    data: bytes = b""


@RAFT_CODEC.register(RaftMsgType.HARD_STATE)
@dataclass(frozen=True, slots=True)
class HardState:
    """What must be durable before a node sends anything that depends on it.

    ``vote`` is the node voted for in ``term`` (``None`` if none); ``commit`` the highest index
    known committed (persisting it is an optimisation; it is never required for safety).
    """

    term: U64 = 0
    vote: NodeId | None = None
    commit: U64 = 0


@RAFT_CODEC.register(RaftMsgType.CONF_STATE)
@dataclass(frozen=True, slots=True)
class ConfState:
    """The membership a node's storage records. ``voters`` sorted; ``learners`` reserved."""

    voters: tuple[NodeId, ...] = ()
    learners: tuple[NodeId, ...] = ()


@RAFT_CODEC.register(RaftMsgType.PRE_VOTE)
@dataclass(frozen=True, slots=True)
class PreVoteRequest:
    """Would you vote for me? ``term`` is the term the sender *would* campaign in (its term + 1);
    receiving it never changes the receiver's term (Raft thesis §9.6)."""

    src: NodeId
    dst: NodeId
    term: U64
    last_log_index: U64
    last_log_term: U64


@RAFT_CODEC.register(RaftMsgType.PRE_VOTE_RESPONSE)
@dataclass(frozen=True, slots=True)
class PreVoteResponse:
    """Answer to ``PreVoteRequest``: granted responses echo the request's term; rejections carry
    the responder's own term (so a stale pre-candidate learns about a newer term)."""

    src: NodeId
    dst: NodeId
    term: U64
    reject: bool


@RAFT_CODEC.register(RaftMsgType.VOTE)
@dataclass(frozen=True, slots=True)
class VoteRequest:
    """RequestVote (§5.2). ``transfer`` marks an election started by leadership transfer, which
    bypasses the check-quorum lease (reserved for the transfer issue)."""

    src: NodeId
    dst: NodeId
    term: U64
    last_log_index: U64
    last_log_term: U64
    transfer: bool = False


@RAFT_CODEC.register(RaftMsgType.VOTE_RESPONSE)
@dataclass(frozen=True, slots=True)
class VoteResponse:
    """Answer to ``VoteRequest`` at the responder's term."""

    src: NodeId
    dst: NodeId
    term: U64
    reject: bool


@RAFT_CODEC.register(RaftMsgType.APPEND)
@dataclass(frozen=True, slots=True)
class AppendEntries:
    """AppendEntries (§5.3): ``entries`` follow ``(prev_index, prev_term)``; ``commit`` is the
    leader's commit index. An empty ``entries`` is a probe or a commit notification."""

    src: NodeId
    dst: NodeId
    term: U64
    prev_index: U64
    prev_term: U64
    entries: tuple[Entry, ...] = field(default=())
    commit: U64 = 0


@RAFT_CODEC.register(RaftMsgType.APPEND_RESPONSE)
@dataclass(frozen=True, slots=True)
class AppendResponse:
    """Answer to ``AppendEntries`` (or, from a stale leader's point of view, to a heartbeat at an
    older term: it tells that leader about the newer term).

    Accepted: ``index`` is the last index the follower now knows to match the leader.
    Rejected: ``index`` is the ``prev_index`` that did not match; the hint says where to retry:
    ``hint_term`` is the follower's term at ``prev_index`` (0 if its log is shorter) and
    ``hint_index`` is the first index the follower holds in that term (or its last index + 1).
    """

    src: NodeId
    dst: NodeId
    term: U64
    index: U64
    reject: bool = False
    hint_index: U64 = 0
    hint_term: U64 = 0


@RAFT_CODEC.register(RaftMsgType.HEARTBEAT)
@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Leader's periodic heartbeat. ``commit`` is min(follower's match, leader commit) so a
    follower never commits past what it is known to hold. ``context`` is echoed back (reserved
    for ReadIndex)."""

    src: NodeId
    dst: NodeId
    term: U64
    commit: U64 = 0
    context: bytes = b""


@RAFT_CODEC.register(RaftMsgType.HEARTBEAT_RESPONSE)
@dataclass(frozen=True, slots=True)
class HeartbeatResponse:
    """Answer to ``Heartbeat``; echoes its ``context``."""

    src: NodeId
    dst: NodeId
    term: U64
    context: bytes = b""


Message = (
    PreVoteRequest
    | PreVoteResponse
    | VoteRequest
    | VoteResponse
    | AppendEntries
    | AppendResponse
    | Heartbeat
    | HeartbeatResponse
)
"""Any message one Raft node sends another."""

MESSAGE_TYPES: tuple[type, ...] = (
    PreVoteRequest,
    PreVoteResponse,
    VoteRequest,
    VoteResponse,
    AppendEntries,
    AppendResponse,
    Heartbeat,
    HeartbeatResponse,
)

ENTRY_OVERHEAD_BYTES = 16
"""Approximate per-entry framing cost counted against byte limits besides ``len(data)``."""


def entry_size(entry: Entry) -> int:
    """Bytes an entry counts for in ``max_bytes`` limits (data plus a fixed overhead)."""
    return len(entry.data) + ENTRY_OVERHEAD_BYTES


def encode(msg: object) -> bytes:
    """Encode a Raft message or record with ``RAFT_CODEC`` (raises ``EncodeError``)."""
    return RAFT_CODEC.encode(msg)


def decode(data: bytes) -> object:
    """Decode bytes with ``RAFT_CODEC``; raises only ``DecodeError``."""
    return RAFT_CODEC.decode(data)


RAFT_CODEC.check_schemas()
