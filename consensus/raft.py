"""A sans-I/O Raft core in the style of etcd's raft (DESIGN §2, §3, §8).

``RaftNode`` is a plain object fed messages (``step``) and time (``tick``); it never reads a
clock, touches a socket or sleeps. Its outputs are taken with ``ready()`` as one ``Ready`` value
and acknowledged with ``advance(ready)``. Times are integer microseconds handed in by the driver;
randomness (the election timeout) comes from the ``random.Random`` given at construction.

Implemented: leader election (§5.2) with pre-vote and check-quorum (thesis §9.6), randomized
election timeouts, log replication (§5.3) with fast conflict back-off and flow control
(probe / replicate states, a window of in-flight appends), commitment only of entries of the
leader's current term by quorum (§5.4.2, with a no-op entry at the start of each term),
heartbeats, durable term and vote; snapshots and InstallSnapshot with log compaction (§7, see
``consensus.storage`` for the driver's side); single-server membership changes with learners
(thesis §4, see ``consensus.raft_membership``); ReadIndex linearizable reads (thesis §6.4, see
``consensus.raft_read``) and leadership transfer (thesis §3.10). Determinism: peers are always
visited in sorted order, so a seed gives the same trace whatever ``PYTHONHASHSEED`` is.
"""

from __future__ import annotations

from consensus.core import Micros, NodeId
from consensus.errors import (
    ConfChangeError,
    ConfigError,
    LeadershipTransferring,
    LocalProtocolError,
    NotLeader,
)
from consensus.messages import (
    AppendEntries,
    AppendResponse,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Heartbeat,
    InstallSnapshot,
    Message,
    PreVoteRequest,
    PreVoteResponse,
    ReadIndexRequest,
    ReadIndexResponse,
    Snapshot,
    TimeoutNow,
    VoteRequest,
)
from consensus.raft_config import RaftConfig
from consensus.raft_membership import (
    apply_change,
    check_change,
    decode_change,
    encode_change,
)
from consensus.raft_progress import Progress, ProgressState
from consensus.raft_read import ReadRequest
from consensus.raft_snapshot import SnapshotReceiver
from consensus.raft_state import RaftState
from consensus.raft_types import (
    ConfChanged,
    LeaderChanged,
    RaftEvent,
    ReadIndexFailed,
    ReadState,
    Ready,
    Role,
    RoleChanged,
    TransferAborted,
)
from consensus.storage import MemoryStorage, Storage

__all__ = [
    "ConfChange",
    "ConfChangeError",
    "ConfChangeType",
    "ConfChanged",
    "ConfState",
    "ConfigError",
    "Entry",
    "EntryKind",
    "HardState",
    "LeaderChanged",
    "LeadershipTransferring",
    "MemoryStorage",
    "Message",
    "NotLeader",
    "RaftConfig",
    "RaftEvent",
    "RaftNode",
    "ReadIndexFailed",
    "ReadState",
    "Ready",
    "Role",
    "RoleChanged",
    "Snapshot",
    "Storage",
    "TransferAborted",
]


class RaftNode(RaftState):
    """One Raft node's state machine.

    Membership. A group is founded in one of two ways:

    - ``voters`` names the founding voter set, the same on every node of the group — a node that
      joins later included (it is not among them, so it waits for the leader); it is used when
      ``storage`` records no membership (an empty ``ConfState``);
    - or the founding membership is written into the log (``raft_membership.bootstrap_entries``)
      and every node, founding or joining, passes ``voters=()``.

    Later membership comes from CONFIG entries and snapshots, applied as the driver applies
    them (``conf_state``). Only voters campaign: a node whose membership is still empty (a
    joiner) just waits for a leader to contact it.

    A restarted node is a new ``RaftNode`` over the same persisted ``storage``; ``now`` is the
    time of construction (its first election deadline counts from it) and ``applied`` the index
    the driver's state machine already reflects (entries after it up to the stored commit are
    handed out again in ``Ready.committed``). ``applied`` may not be below a compacted index: the
    driver restores its state machine from ``storage.snapshot()`` first (``LocalProtocolError``).

    Proposals on a non-leader raise ``NotLeader(leader_hint)``; the caller forwards them.
    """

    # --- read-only state -------------------------------------------------------------------------

    @property
    def id(self) -> NodeId:
        return self._id

    @property
    def role(self) -> Role:
        return self._role

    @property
    def term(self) -> int:
        return self._term

    @property
    def vote(self) -> NodeId | None:
        """Whom this node voted for in the current term."""
        return self._vote

    @property
    def leader_id(self) -> NodeId | None:
        """The leader this node knows of in its term (itself when leading), else ``None``."""
        return self._lead

    @property
    def conf_state(self) -> ConfState:
        """The membership as of ``applied_index`` (what a snapshot taken now must record)."""
        return self._conf

    @property
    def voters(self) -> tuple[NodeId, ...]:
        """The voter set, sorted."""
        return self._conf.voters

    @property
    def learners(self) -> tuple[NodeId, ...]:
        """The non-voting members, sorted."""
        return self._conf.learners

    @property
    def pending_conf_index(self) -> int:
        """On a leader, the index of the last membership change proposed (or of its first
        entry); another change may be proposed once ``applied_index`` reaches it."""
        return self._pending_conf_index

    @property
    def transferee(self) -> NodeId | None:
        """The node leadership is being transferred to, if a transfer is under way."""
        return self._transferee

    @property
    def commit_index(self) -> int:
        return self._log.committed

    @property
    def applied_index(self) -> int:
        """Highest index the driver has applied (acknowledged through ``advance``)."""
        return self._log.applied

    @property
    def first_index(self) -> int:
        """First index still in the log (the entries before it are compacted)."""
        return self._log.first_index()

    @property
    def last_index(self) -> int:
        return self._log.last_index()

    @property
    def storage(self) -> Storage:
        return self._storage

    @property
    def config(self) -> RaftConfig:
        return self._cfg

    def term_at(self, index: int) -> int | None:
        """Term of the entry at ``index`` (also answered for the index just before
        ``first_index``); ``None`` if compacted away or beyond the last index."""
        return self._log.term(index)

    def log_entries(self, lo: int = 1) -> list[Entry]:
        """The log from ``lo`` on (from ``first_index`` at the earliest), including entries not
        yet persisted (for checkers)."""
        return self._log.entries(max(lo, self._log.first_index()))

    def progress(self, peer: NodeId) -> Progress | None:
        """The leader's replication progress of ``peer`` (``None`` when not leader)."""
        return self._leader.progress.get(peer) if self._leader else None

    @property
    def snapshot_receiver(self) -> SnapshotReceiver:
        """The follower side of InstallSnapshot: chunks put back together, counters
        (``installed``, ``refused``, ``last_error``). A driver whose state machine always seals
        its snapshots (the KV) sets ``require_sealed`` so unchecked data is never installed."""
        return self._snap_rx

    # --- driving ---------------------------------------------------------------------------------

    def next_deadline(self) -> Micros | None:
        """Absolute time (µs) at which ``tick`` is next needed; ``None`` if no timer runs."""
        if self._role is Role.LEADER:
            deadlines = [
                d
                for d in (self._heartbeat_deadline, self._quorum_deadline, self._transfer_deadline)
                if d is not None
            ]
            return min(deadlines) if deadlines else None
        return self._election_deadline

    def tick(self, now: Micros) -> None:
        """Fire the timers due at ``now``: heartbeat, check-quorum and the transfer timeout on a
        leader, the election timeout elsewhere. Each due timer fires once, however late."""
        self._now = max(self._now, now)
        if self._role is Role.LEADER:
            if self._quorum_deadline is not None and now >= self._quorum_deadline:
                self._quorum_deadline = now + self._cfg.election_timeout_min
                if self._leader is None or not self._leader.quorum_active():
                    self._become_follower(self._term, None, now)
                    return
            if self._transfer_deadline is not None and now >= self._transfer_deadline:
                self._abort_transfer()
            if self._heartbeat_deadline is not None and now >= self._heartbeat_deadline:
                self._heartbeat_deadline = now + self._cfg.heartbeat_interval
                if self._leader is not None:
                    self._leader.broadcast_heartbeat()
        elif self._election_deadline is not None and now >= self._election_deadline:
            self._start_election(now)

    def campaign(self, now: Micros) -> None:
        """Start an election now (a local command; a no-op on a leader or a non-voter).
        With pre-vote on, a pre-vote round comes first."""
        self._now = max(self._now, now)
        if self._role is not Role.LEADER:
            self._start_election(now)

    def propose(self, data: bytes, now: Micros) -> int:
        """Append ``data`` to the log as a NORMAL entry; returns its index.

        The entry is committed when a later ``Ready.committed`` carries it; it may be lost if
        leadership changes first (the caller sees a different entry at that index). Raises
        ``NotLeader(leader_hint)`` on a non-leader, and its subclass
        ``LeadershipTransferring(target)`` while a leadership transfer is under way.
        """
        if not isinstance(data, bytes):
            raise LocalProtocolError(f"proposal data must be bytes, got {type(data).__name__}")
        return self._append(EntryKind.NORMAL, data, now)

    def check_writable(self) -> None:
        """Raise what ``propose`` would raise now (``NotLeader``, ``LeadershipTransferring``);
        return otherwise. Changes nothing (a driver that groups proposals checks each one)."""
        self._writable_leader()

    def propose_conf_change(self, change: ConfChange, now: Micros) -> int:
        """Propose one single-server membership change; returns the index of its CONFIG entry.

        The change takes effect on each node when that node applies the entry (in ``advance``
        after a ``Ready.committed`` carried it; a ``ConfChanged`` event follows), not when it is
        appended. One change at a time: ``ConfChangeError`` while the previous change (or, on a
        new leader, its first entry) is not yet applied on this leader, and for changes that do
        not fit the membership (adding a voter twice, removing the last voter, promoting a
        learner whose log is more than ``config.max_promote_lag`` entries behind, ...). Raises
        ``NotLeader`` / ``LeadershipTransferring`` like ``propose``.

        A leader that applies its own removal steps down (after telling the most up-to-date
        voter to campaign at once) and stays a follower outside the group.
        """
        leader = self._writable_leader()
        if self._pending_conf_index > self._log.applied:
            raise ConfChangeError(
                f"the change at index {self._pending_conf_index} is not applied yet "
                f"(applied {self._log.applied}); one membership change at a time"
            )
        check_change(
            self._conf,
            change,
            progress=leader.progress,
            last_index=self._log.last_index(),
            max_promote_lag=self._cfg.max_promote_lag,
        )
        index = self._append(EntryKind.CONFIG, encode_change(change), now)
        self._pending_conf_index = index
        return index

    def read_index(self, context: bytes, now: Micros) -> None:
        """Start a linearizable read identified by ``context`` (non-empty, unique among this
        node's pending reads). A ``ReadState(context, index)`` in a later ``Ready`` says the read
        may be served once the state machine has applied ``index``; a ``ReadIndexFailed`` event
        says it never will (leadership changed), and the caller may retry.

        On the leader: it records its commit index (after committing an entry of its own term,
        which it waits for) and confirms it is still the leader with a round of heartbeats that
        a quorum of voters acknowledges. On a follower or learner: the read is forwarded to the
        leader it knows (``ReadIndexRequest``), which answers with the index to wait for. With
        no known leader, raises ``NotLeader(None)``. A lost message leaves the read pending: the
        caller keeps a deadline.
        """
        if not isinstance(context, bytes) or not context:
            raise LocalProtocolError("a read's context must be non-empty bytes")
        self._now = max(self._now, now)
        if self._leader is not None:
            self._leader_read(ReadRequest(context, None))
            return
        if self._lead is None:
            raise NotLeader(None)
        if context in self._forwarded:
            raise LocalProtocolError(f"a read with context {context!r} is already pending")
        self._forwarded[context] = self._lead
        self._send(ReadIndexRequest(self._id, self._lead, self._term, context))

    def transfer_leadership(self, to: NodeId, now: Micros) -> None:
        """Hand leadership to the voter ``to`` (thesis §3.10). The leader stops accepting
        proposals and membership changes, brings ``to``'s log up to date, then sends it
        ``TimeoutNow``; ``to`` campaigns at once, skipping pre-vote and the check-quorum lease.
        Success shows as a ``LeaderChanged`` event; if no new leader has deposed this one within
        ``election_timeout_min`` the transfer is abandoned (``TransferAborted``) and proposals
        are accepted again. Transferring to itself cancels a transfer under way; a new target
        replaces the old one. Raises ``NotLeader`` on a non-leader and ``LocalProtocolError``
        if ``to`` is not a voter.
        """
        self._now = max(self._now, now)
        leader = self._leader
        if leader is None:
            raise NotLeader(self._lead)
        if to == self._id:
            if self._transferee is not None:
                self._abort_transfer()
            return
        if to not in self._conf.voters:
            raise LocalProtocolError(f"cannot transfer leadership to {to!r}: not a voter")
        if self._transferee == to:
            return
        if self._transferee is not None:
            self._abort_transfer()
        self._transferee = to
        self._transfer_deadline = now + self._cfg.election_timeout_min
        if leader.progress[to].match == self._log.last_index():
            self._send(TimeoutNow(self._id, to, self._term))
        else:
            leader.send_append(to, send_if_empty=True)

    def append_pending(self, peer: NodeId) -> bool:
        """On a leader: entries proposed since the last ``ready()`` will go to ``peer`` in the
        next one (it is replicating and its window is open), with the commit index then. A
        driver holding a commit notice for ``peer`` (an empty append) may drop it: the next
        append supersedes it."""
        leader = self._leader
        if leader is None or not leader.pending_append:
            return False
        pr = leader.progress.get(peer)
        return pr is not None and pr.state is ProgressState.REPLICATE and not pr.is_paused()

    def has_ready(self) -> bool:
        """True when ``ready()`` has something to hand out (False while a Ready is outstanding)."""
        if self._outstanding is not None:
            return False
        hs = self._persisted_hs
        log = self._log
        return bool(
            self._msgs
            or (self._leader is not None and self._leader.dirty())
            or self._events
            or self._read_states
            or log.unstable
            or log.pending_snapshot is not None
            or log.committed > log.applied
            or hs.term != self._term
            or hs.vote != self._vote
            or hs.commit != log.committed
        )

    def ready(self) -> Ready:
        """Take the pending outputs (see ``Ready`` for the order to handle them in).

        Raises ``LocalProtocolError`` if the previous Ready has not been ``advance``d.
        """
        if self._outstanding is not None:
            raise LocalProtocolError("advance() the previous Ready before taking another")
        if self._leader is not None:
            self._leader.flush()  # proposals made since the last Ready travel together
        log = self._log
        hs = self._hard_state()
        snap = log.pending_snapshot
        lo = max(log.applied, snap.meta.index if snap is not None else 0) + 1
        committed: list[Entry] = []
        if log.committed >= lo:
            committed = log.entries(lo, log.committed + 1)
        msgs, early = self._order_early(self._msgs)
        rd = Ready(
            hard_state=hs if hs != self._persisted_hs else None,
            entries=list(log.unstable),
            messages=msgs,
            early=early,
            committed=committed,
            events=self._events,
            snapshot=snap,
            read_states=self._read_states,
        )
        self._msgs = []
        self._events = []
        self._read_states = []
        self._outstanding = rd
        return rd

    def _order_early(self, msgs: list[Message]) -> tuple[list[Message], int]:
        """Move the messages that may leave before this Ready is persisted to the front, in
        their order (the rest keep theirs); returns the list and how many lead it.

        Early: a leader's AppendEntries and Heartbeats of a term already durable here (thesis
        §10.2.1: they promise nothing about this node's disk; its own log counts toward commit
        only once persisted, and the commit index they carry is quorum-durable). Votes,
        acknowledgements and everything else wait for the persist. A term not yet durable (a
        single voter that just elected itself) sends nothing early: a crash before the persist
        could reuse that term for different entries at the same indices."""
        durable_term = self._persisted_hs.term
        early = [
            m for m in msgs if isinstance(m, AppendEntries | Heartbeat) and m.term <= durable_term
        ]
        if not early:
            return msgs, 0
        if len(early) == len(msgs):
            return msgs, len(msgs)
        ids = {id(m) for m in early}
        return early + [m for m in msgs if id(m) not in ids], len(early)

    def advance(self, ready: Ready) -> None:
        """The driver persisted, sent and applied ``ready`` (the last one taken). Membership
        changes carried by its snapshot or CONFIG entries take effect now."""
        if ready is not self._outstanding:
            raise LocalProtocolError("advance() must be given the Ready last returned by ready()")
        if ready.snapshot is not None:
            self._log.snapshot_stable(ready.snapshot)
        if ready.hard_state is not None:
            self._persisted_hs = ready.hard_state
        if ready.entries:
            last = ready.entries[-1]
            self._log.stable_to(last.index, last.term)
            if self._leader is not None:
                self._leader.self_stable(self._log.offset - 1)
        if ready.committed:
            self._log.applied_to(ready.committed[-1].index)
        self._outstanding = None
        if ready.snapshot is not None:
            meta = ready.snapshot.meta
            self._set_conf(meta.conf_state, meta.index, None)
        for e in ready.committed:
            if e.kind is EntryKind.CONFIG:
                change = decode_change(e)
                self._set_conf(apply_change(self._conf, change), e.index, change)
        if self._campaign_after_apply and not self._has_unapplied_conf():
            self._campaign_after_apply = False
            if self._role is not Role.LEADER:
                self._start_election(self._now, transfer=True)

    def step(self, msg: Message, now: Micros) -> None:
        """Handle one message received at ``now``. Messages for another node are dropped."""
        if msg.dst != self._id or msg.src == self._id:
            self.dropped_messages += 1
            return
        self._now = max(self._now, now)
        if msg.term > self._term:
            if isinstance(msg, PreVoteRequest | VoteRequest):
                transfer = isinstance(msg, VoteRequest) and msg.transfer
                if not transfer and self._in_lease(now):
                    return  # we heard from a live leader recently: don't let this node disrupt it
            if isinstance(msg, PreVoteRequest) or (
                isinstance(msg, PreVoteResponse) and not msg.reject
            ):
                pass  # pre-votes never change terms; a granted one carries the future term
            else:
                from_leader = AppendEntries | Heartbeat | InstallSnapshot | TimeoutNow
                lead = msg.src if isinstance(msg, from_leader) else None
                self._become_follower(msg.term, lead, now)
        elif msg.term < self._term:
            if isinstance(msg, AppendEntries | Heartbeat | InstallSnapshot):
                # A stale leader: tell it about our term so it steps down (needed with
                # check-quorum/pre-vote, where its higher-term rivals may never reach it).
                self._send(AppendResponse(self._id, msg.src, self._term, index=0))
            elif isinstance(msg, PreVoteRequest):
                self._send(PreVoteResponse(self._id, msg.src, self._term, reject=True))
            elif isinstance(msg, ReadIndexRequest):
                self._send(ReadIndexResponse(self._id, msg.src, self._term, msg.context, 0, True))
            return
        if isinstance(msg, PreVoteRequest | VoteRequest):
            self._handle_vote_request(msg, now)
        elif isinstance(msg, ReadIndexRequest):
            if self._leader is None:
                self._send(ReadIndexResponse(self._id, msg.src, self._term, msg.context, 0, True))
            else:
                self._leader_read(ReadRequest(msg.context, msg.src))
        elif isinstance(msg, ReadIndexResponse):
            self._handle_read_response(msg)
        elif isinstance(msg, TimeoutNow):
            if self._role is not Role.LEADER:
                self._start_election(now, transfer=True)
        elif self._leader is not None:
            self._step_leader(msg)
        elif self._role is Role.FOLLOWER:
            self._step_follower(msg, now)
        else:
            self._step_candidate(msg, now)
