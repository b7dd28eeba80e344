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
from consensus.fastinit import fast_init

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
    INSTALL_SNAPSHOT = 9
    TIMEOUT_NOW = 10
    READ_INDEX = 11
    READ_INDEX_RESPONSE = 12
    SNAPSHOT_PROGRESS = 13
    # 14-31 reserved for further messages between peers.
    # Persisted records (not sent between peers, but encoded the same way by drivers):
    ENTRY = 64
    HARD_STATE = 65
    CONF_STATE = 66
    CONF_CHANGE = 67
    SNAPSHOT_META = 68
    SNAPSHOT = 69


class EntryKind(enum.IntEnum):
    """What a log entry carries. APPEND-ONLY (persisted and sent on the wire)."""

    NORMAL = 0
    """Application data proposed by a client."""
    NOOP = 1
    """Empty entry a new leader appends at the start of its term, so it can commit."""
    CONFIG = 2
    """A membership change: ``data`` is an encoded ``ConfChange`` (``encode(change)``)."""


class ConfChangeType(enum.IntEnum):
    """The single-server membership changes (thesis §4.1). APPEND-ONLY (persisted in entries).

    Applying a change sets the node's status absolutely (voter, learner or absent), so replaying
    a suffix of already applied changes leaves the membership unchanged.
    """

    ADD_VOTER = 0
    """Make ``node`` a voter (from absent). Prefer ADD_LEARNER, then PROMOTE_LEARNER."""
    REMOVE_VOTER = 1
    """Remove the voter ``node`` from the group."""
    ADD_LEARNER = 2
    """Add ``node`` as a learner: it receives the log but neither votes nor counts for quorum."""
    PROMOTE_LEARNER = 3
    """Make the learner ``node`` a voter (allowed once it has caught up with the leader)."""
    REMOVE_LEARNER = 4
    """Remove the learner ``node`` from the group."""


@RAFT_CODEC.register(RaftMsgType.ENTRY)
@fast_init
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
    """A group's membership: ``voters`` and non-voting ``learners``, each sorted, disjoint."""

    voters: tuple[NodeId, ...] = ()
    learners: tuple[NodeId, ...] = ()


@RAFT_CODEC.register(RaftMsgType.CONF_CHANGE)
@dataclass(frozen=True, slots=True)
class ConfChange:
    """One single-server membership change; the data of an ``EntryKind.CONFIG`` entry."""

    type: ConfChangeType
    node: NodeId


@RAFT_CODEC.register(RaftMsgType.SNAPSHOT_META)
@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    """Where a snapshot sits in the log: it replaces entries ``1..index``; ``term`` is the term
    of entry ``index``; ``conf_state`` the membership as of ``index``."""

    index: U64 = 0
    term: U64 = 0
    conf_state: ConfState = field(default_factory=ConfState)


@RAFT_CODEC.register(RaftMsgType.SNAPSHOT)
@dataclass(frozen=True, slots=True)
class Snapshot:
    """A state-machine snapshot (``data``, opaque to Raft) and its position ``meta``.

    An empty snapshot (``meta.index == 0``) stands for "no snapshot"."""

    meta: SnapshotMeta = field(default_factory=SnapshotMeta)
    data: bytes = b""


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
    """RequestVote (§5.2). ``transfer`` marks an election started by leadership transfer
    (``TimeoutNow``), which bypasses the check-quorum lease."""

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
@fast_init
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
@fast_init
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
@fast_init
@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Leader's periodic heartbeat. ``commit`` is min(follower's match, leader commit) so a
    follower never commits past what it is known to hold. ``context`` is echoed back: a
    non-empty one identifies the ReadIndex round the heartbeat confirms leadership for."""

    src: NodeId
    dst: NodeId
    term: U64
    commit: U64 = 0
    context: bytes = b""


@RAFT_CODEC.register(RaftMsgType.HEARTBEAT_RESPONSE)
@fast_init
@dataclass(frozen=True, slots=True)
class HeartbeatResponse:
    """Answer to ``Heartbeat``; echoes its ``context``."""

    src: NodeId
    dst: NodeId
    term: U64
    context: bytes = b""


@RAFT_CODEC.register(RaftMsgType.INSTALL_SNAPSHOT)
@dataclass(frozen=True, slots=True)
class InstallSnapshot:
    """InstallSnapshot (§7, Figure 13): the leader sends its latest snapshot to a follower whose
    next entries it has compacted, in chunks of at most ``RaftConfig.max_bytes_per_msg`` bytes,
    one at a time: ``snapshot.data`` holds bytes ``[offset, offset + len)`` of the snapshot's
    data (``snapshot.meta`` is the whole snapshot's) and ``done`` marks the last chunk.

    The follower answers a chunk before the last with ``SnapshotProgress`` (how much it holds),
    and the last one (or any chunk of a snapshot it does not need) with an ``AppendResponse``
    whose ``index`` is the snapshot's index (installed, or already covered by its log) or its
    commit index (the snapshot is older than what it has committed)."""

    src: NodeId
    dst: NodeId
    term: U64
    snapshot: Snapshot
    offset: U64 = 0
    done: bool = True


@RAFT_CODEC.register(RaftMsgType.SNAPSHOT_PROGRESS)
@dataclass(frozen=True, slots=True)
class SnapshotProgress:
    """A follower holds bytes ``[0, offset)`` of the snapshot at ``index`` the leader is
    sending it: the leader sends the chunk at ``offset`` next."""

    src: NodeId
    dst: NodeId
    term: U64
    index: U64
    offset: U64


@RAFT_CODEC.register(RaftMsgType.TIMEOUT_NOW)
@dataclass(frozen=True, slots=True)
class TimeoutNow:
    """Leadership transfer (thesis §3.10): the leader tells an up-to-date voter to campaign
    now, skipping pre-vote and the check-quorum lease."""

    src: NodeId
    dst: NodeId
    term: U64


@RAFT_CODEC.register(RaftMsgType.READ_INDEX)
@dataclass(frozen=True, slots=True)
class ReadIndexRequest:
    """A follower or learner forwards a linearizable read (``context``, unique per read) to
    its leader."""

    src: NodeId
    dst: NodeId
    term: U64
    context: bytes


@RAFT_CODEC.register(RaftMsgType.READ_INDEX_RESPONSE)
@dataclass(frozen=True, slots=True)
class ReadIndexResponse:
    """The leader's answer to a forwarded read: the read may be served once the requester has
    applied ``index``; ``reject`` means the leader could not serve it (it is not, or no longer,
    the leader)."""

    src: NodeId
    dst: NodeId
    term: U64
    context: bytes
    index: U64 = 0
    reject: bool = False


Message = (
    PreVoteRequest
    | PreVoteResponse
    | VoteRequest
    | VoteResponse
    | AppendEntries
    | AppendResponse
    | Heartbeat
    | HeartbeatResponse
    | InstallSnapshot
    | TimeoutNow
    | ReadIndexRequest
    | ReadIndexResponse
    | SnapshotProgress
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
    InstallSnapshot,
    TimeoutNow,
    ReadIndexRequest,
    ReadIndexResponse,
    SnapshotProgress,
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
