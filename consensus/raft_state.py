"""The machinery behind ``consensus.raft.RaftNode``: its state, the handlers of each role and
the transitions between roles (etcd's ``raft.go``). Nothing here is public: drivers use
``RaftNode``, which adds the API (``step``, ``tick``, ``ready``, proposals, reads, transfer) on
top of ``RaftState``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from consensus.core import Micros, NodeId
from consensus.errors import (
    LeadershipTransferring,
    LocalProtocolError,
    NotLeader,
)
from consensus.messages import (
    AppendEntries,
    AppendResponse,
    ConfChange,
    ConfState,
    EntryKind,
    HardState,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    PreVoteRequest,
    PreVoteResponse,
    ReadIndexResponse,
    SnapshotProgress,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
)
from consensus.raft_config import RaftConfig
from consensus.raft_leader import Replication
from consensus.raft_log import RaftLog
from consensus.raft_membership import (
    make_conf_state,
    replay_conf,
    snapshot_index,
)
from consensus.raft_read import ReadOnly, ReadRequest, parse_round, round_context
from consensus.raft_snapshot import SnapshotReceiver
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
from consensus.storage import Storage


class RaftState:
    """Internal state of one Raft node (see ``RaftNode`` for the constructor's contract)."""

    def __init__(
        self,
        id: NodeId,
        voters: Sequence[NodeId],
        storage: Storage,
        config: RaftConfig,
        rng: random.Random,
        *,
        now: Micros = 0,
        applied: int = 0,
    ) -> None:
        self._cfg = config.validate()
        hs, cs = storage.initial_state()
        conf = cs if cs.voters or cs.learners else make_conf_state(voters)
        if applied < storage.first_index() - 1:
            raise LocalProtocolError(
                f"applied {applied} is below the compacted index {storage.first_index() - 1}: "
                "restore the state machine from storage.snapshot() and pass its index"
            )
        self._id = id
        self._storage = storage
        self._rng = rng
        # A snapshot only ever holds committed state, whatever the stored commit says.
        committed = max(hs.commit, snapshot_index(storage), storage.first_index() - 1)
        self._log = RaftLog(storage, committed=committed, applied=applied)
        self._conf = replay_conf(conf, storage, applied)
        self._term = hs.term
        self._vote = hs.vote
        self._persisted_hs = hs
        self._role = Role.FOLLOWER
        self._lead: NodeId | None = None
        self._now: Micros = now
        self._msgs: list[Message] = []
        self._events: list[RaftEvent] = []
        self._read_states: list[ReadState] = []
        self._votes: dict[NodeId, bool] = {}
        self._leader: Replication | None = None
        self._reads: ReadOnly | None = None
        self._deferred_reads: list[ReadRequest] = []
        self._forwarded: dict[bytes, NodeId] = {}
        self._snap_rx = SnapshotReceiver()
        self._pending_conf_index = 0
        self._transferee: NodeId | None = None
        self._transfer_deadline: Micros | None = None
        self._campaign_after_apply = False
        self._outstanding: Ready | None = None
        self._last_leader_contact: Micros = now
        self._timeout = self._draw_timeout()
        self._election_deadline: Micros | None = None
        self._heartbeat_deadline: Micros | None = None
        self._quorum_deadline: Micros | None = None
        self.dropped_messages = 0
        """Messages ignored because they were addressed to another node."""
        self._reset_election_timer(now)

    # --- per-role handlers -----------------------------------------------------------------------

    def _step_leader(self, msg: Message) -> None:
        leader = self._leader
        assert leader is not None
        leader.handle(msg)
        if isinstance(msg, HeartbeatResponse) and msg.context and self._reads is not None:
            round_no = parse_round(msg.context)
            if round_no is not None:
                self._serve_reads(self._reads.ack(round_no, msg.src, leader.is_quorum))
        elif isinstance(msg, AppendResponse):
            if (
                msg.src == self._transferee
                and not msg.reject
                and leader.progress[msg.src].match == self._log.last_index()
            ):
                self._send(TimeoutNow(self._id, msg.src, self._term))
            self._release_deferred_reads()

    def _step_follower(self, msg: Message, now: Micros) -> None:
        if isinstance(msg, AppendEntries):
            self._heard_from_leader(msg.src, now)
            self._handle_append(msg)
        elif isinstance(msg, Heartbeat):
            self._heard_from_leader(msg.src, now)
            self._log.commit_to(msg.commit)
            self._send(HeartbeatResponse(self._id, msg.src, self._term, msg.context))
        elif isinstance(msg, InstallSnapshot):
            self._heard_from_leader(msg.src, now)
            self._handle_snapshot(msg)

    def _step_candidate(self, msg: Message, now: Micros) -> None:
        if isinstance(msg, AppendEntries | Heartbeat | InstallSnapshot):
            self._become_follower(self._term, msg.src, now)
            self._step_follower(msg, now)
            return
        pre = self._role is Role.PRE_CANDIDATE
        if pre and isinstance(msg, PreVoteResponse):
            if not msg.reject and msg.term != self._term + 1:
                return
        elif not pre and isinstance(msg, VoteResponse):
            pass
        else:
            return
        if msg.src in self._conf.voters:
            self._votes.setdefault(msg.src, not msg.reject)
        granted = sum(1 for v in self._votes.values() if v)
        rejected = len(self._votes) - granted
        if granted >= self._quorum():
            if pre:
                self._become_candidate(now)
            else:
                self._become_leader(now)
        elif rejected >= self._quorum():
            self._become_follower(self._term, None, now)

    def _handle_vote_request(self, msg: PreVoteRequest | VoteRequest, now: Micros) -> None:
        pre = isinstance(msg, PreVoteRequest)
        can_vote = (
            self._vote == msg.src
            or (self._vote is None and self._lead is None)
            or (pre and msg.term > self._term)
        )
        grant = can_vote and self._log.is_up_to_date(msg.last_log_index, msg.last_log_term)
        if pre:
            term = msg.term if grant else self._term
            self._send(PreVoteResponse(self._id, msg.src, term, reject=not grant))
            return
        if grant:
            self._vote = msg.src
            self._push_election_deadline(now)
        self._send(VoteResponse(self._id, msg.src, self._term, reject=not grant))

    def _handle_append(self, msg: AppendEntries) -> None:
        if msg.prev_index < self._log.committed:
            self._send(AppendResponse(self._id, msg.src, self._term, index=self._log.committed))
            return
        last_new = self._log.maybe_append(msg.prev_index, msg.prev_term, msg.commit, msg.entries)
        if last_new is not None:
            self._send(AppendResponse(self._id, msg.src, self._term, index=last_new))
            return
        last = self._log.last_index()
        if msg.prev_index > last:
            hint_index, hint_term = last + 1, 0
        else:
            hint_term = self._log.term(msg.prev_index) or 0
            hint_index = self._log.first_index_of_term(msg.prev_index)
        self._send(
            AppendResponse(
                self._id,
                msg.src,
                self._term,
                index=msg.prev_index,
                reject=True,
                hint_index=hint_index,
                hint_term=hint_term,
            )
        )

    def _handle_snapshot(self, msg: InstallSnapshot) -> None:
        """§7: install the leader's snapshot (once all its chunks are in) unless the log
        already covers it."""
        meta = msg.snapshot.meta
        log = self._log
        if meta.index <= log.committed:
            index = log.committed  # older than what we committed: tell the leader where we are
            self._snap_rx.clear()
        elif log.match_term(meta.index, meta.term):
            log.commit_to(meta.index)  # our log holds it: just fast-forward the commit
            index = meta.index
            self._snap_rx.clear()
        else:
            got = self._snap_rx.receive(msg)
            if isinstance(got, int):
                self._send(SnapshotProgress(self._id, msg.src, self._term, meta.index, got))
                return
            log.restore(got)  # the driver persists and restores it from the next Ready
            index = meta.index
        self._send(AppendResponse(self._id, msg.src, self._term, index=index))

    # --- reads -----------------------------------------------------------------------------------

    def _leader_read(self, req: ReadRequest) -> None:
        leader, reads = self._leader, self._reads
        assert leader is not None and reads is not None
        if self._log.term(self._log.committed) != self._term:
            self._deferred_reads.append(req)  # commit an entry of our term first (thesis §6.4)
            return
        index = self._log.committed
        if leader.is_quorum([self._id]):
            self._serve_reads([ReadRequest(req.context, req.requester, index)])
            return
        round_no = reads.start(req.context, req.requester, index)
        leader.broadcast_heartbeat(round_context(round_no))

    def _release_deferred_reads(self) -> None:
        if self._deferred_reads and self._log.term(self._log.committed) == self._term:
            deferred, self._deferred_reads = self._deferred_reads, []
            for req in deferred:
                self._leader_read(req)

    def _serve_reads(self, reqs: list[ReadRequest]) -> None:
        for req in reqs:
            if req.requester is None:
                self._read_states.append(ReadState(req.context, req.index))
            else:
                self._send(
                    ReadIndexResponse(self._id, req.requester, self._term, req.context, req.index)
                )

    def _handle_read_response(self, msg: ReadIndexResponse) -> None:
        if self._forwarded.get(msg.context) != msg.src:
            return  # unknown, already failed, or not from whom we asked
        del self._forwarded[msg.context]
        if msg.reject:
            hint = self._lead if self._lead != msg.src else None
            self._events.append(ReadIndexFailed(msg.context, hint))
        else:
            self._read_states.append(ReadState(msg.context, msg.index))

    def _fail_reads(self, leader_reads: list[ReadRequest], hint: NodeId | None) -> None:
        """Fail the reads this node served as leader and those it forwarded to its leader;
        ``hint`` is the leader to retry at, if known."""
        for req in leader_reads:
            if req.requester is None:
                self._events.append(ReadIndexFailed(req.context, hint))
            else:
                self._send(
                    ReadIndexResponse(self._id, req.requester, self._term, req.context, 0, True)
                )
        for ctx in sorted(self._forwarded):
            self._events.append(ReadIndexFailed(ctx, hint))
        self._forwarded.clear()

    # --- membership and transfer -----------------------------------------------------------------

    def _writable_leader(self) -> Replication:
        leader = self._leader
        if leader is None:
            raise NotLeader(self._lead)
        if self._transferee is not None:
            raise LeadershipTransferring(self._transferee)
        return leader

    def _append(self, kind: EntryKind, data: bytes, now: Micros) -> int:
        self._now = max(self._now, now)
        leader = self._writable_leader()
        return leader.append(kind, data)  # sent at the next ready() (Replication.flush)

    def _set_conf(self, conf: ConfState, index: int, change: ConfChange | None) -> None:
        """Adopt the membership ``conf`` (applied at ``index``)."""
        self._conf = conf
        self._events.append(ConfChanged(index, conf, change))
        now = self._now
        leader = self._leader
        if leader is not None:
            leader.set_members(conf)
            if self._transferee is not None and self._transferee not in conf.voters:
                self._abort_transfer()
            if self._id not in conf.voters:
                self._step_down_removed(leader, now)
                return
            leader.maybe_commit()
            leader.broadcast_append()
            if self._reads is not None:
                self._serve_reads(self._reads.release_confirmed(leader.is_quorum))
            self._release_deferred_reads()
        elif self._id not in conf.voters:
            if self._role is not Role.FOLLOWER:
                self._become_follower(self._term, None, now)
            self._election_deadline = None
        elif self._election_deadline is None:
            self._reset_election_timer(now)

    def _step_down_removed(self, leader: Replication, now: Micros) -> None:
        """This leader applied its own removal: let the followers learn that the change is
        committed, ask the most up-to-date voter to campaign now, and step down."""
        leader.broadcast_append()
        best = max(self._conf.voters, key=lambda v: leader.progress[v].match)
        self._send(TimeoutNow(self._id, best, self._term))
        self._become_follower(self._term, None, now)

    def _abort_transfer(self) -> None:
        if self._transferee is not None:
            self._events.append(TransferAborted(self._transferee, self._term))
        self._transferee = None
        self._transfer_deadline = None

    def _has_unapplied_conf(self) -> bool:
        """Does the node know committed membership changes it has not applied yet?"""
        log = self._log
        if log.pending_snapshot is not None:
            return True
        lo, hi = log.applied + 1, log.committed + 1
        return lo < hi and any(e.kind is EntryKind.CONFIG for e in log.entries(lo, hi))

    # --- transitions -----------------------------------------------------------------------------

    def _start_election(self, now: Micros, *, transfer: bool = False) -> None:
        if self._id not in self._conf.voters:
            return
        if self._has_unapplied_conf():
            # Campaigning with a stale membership could elect two leaders (module docstring of
            # consensus.raft_membership): wait until the driver has applied it.
            if transfer:
                self._campaign_after_apply = True
            else:
                self._reset_election_timer(now)
            return
        if self._cfg.pre_vote and not transfer:
            self._become_pre_candidate(now)
        else:
            self._become_candidate(now, transfer=transfer)

    def _become_follower(self, term: int, lead: NodeId | None, now: Micros) -> None:
        self._reset(term, now)
        self._set_role(Role.FOLLOWER)
        self._set_lead(lead)
        if lead is not None:
            self._last_leader_contact = now

    def _become_pre_candidate(self, now: Micros) -> None:
        # Like etcd: the term does not change; the randomized timeout restarts.
        self._votes = {self._id: True}
        self._drop_leadership()
        self._timeout = self._draw_timeout()
        self._reset_election_timer(now)
        self._set_role(Role.PRE_CANDIDATE)
        self._set_lead(None)
        if not self._poll_won():
            last_index, last_term = self._log.last_index(), self._log.last_term()
            for peer in self._peers():
                self._send(PreVoteRequest(self._id, peer, self._term + 1, last_index, last_term))
        else:
            self._become_candidate(now)

    def _become_candidate(self, now: Micros, *, transfer: bool = False) -> None:
        self._reset(self._term + 1, now)
        self._vote = self._id
        self._votes = {self._id: True}
        self._set_role(Role.CANDIDATE)
        self._set_lead(None)
        if self._poll_won():
            self._become_leader(now)
            return
        last_index, last_term = self._log.last_index(), self._log.last_term()
        for peer in self._peers():
            self._send(VoteRequest(self._id, peer, self._term, last_index, last_term, transfer))

    def _become_leader(self, now: Micros) -> None:
        self._set_role(Role.LEADER)
        self._set_lead(self._id)
        self._election_deadline = None
        self._leader = Replication(
            self._id, self._term, self._conf, self._log, self._cfg, self._send
        )
        self._reads = ReadOnly(self._id)
        self._heartbeat_deadline = now + self._cfg.heartbeat_interval
        self._quorum_deadline = (
            now + self._cfg.election_timeout_min if self._cfg.check_quorum else None
        )
        self._pending_conf_index = self._leader.append(EntryKind.NOOP, b"")
        self._leader.broadcast_append()

    def _drop_leadership(self) -> None:
        """Forget leader-only state; pending reads fail."""
        reads: list[ReadRequest] = []
        if self._reads is not None:
            reads = self._reads.drain() + self._deferred_reads
        self._leader = None
        self._reads = None
        self._deferred_reads = []
        self._transferee = None
        self._transfer_deadline = None
        if reads:
            self._fail_reads(reads, None)

    def _reset(self, term: int, now: Micros) -> None:
        if term != self._term:
            self._term = term
            self._vote = None
            self._timeout = self._draw_timeout()
            self._campaign_after_apply = False
            self._snap_rx.clear()
            if self._forwarded:
                self._fail_reads([], None)
        self._votes = {}
        self._drop_leadership()
        self._heartbeat_deadline = None
        self._quorum_deadline = None
        self._reset_election_timer(now)

    def _poll_won(self) -> bool:
        return sum(1 for v in self._votes.values() if v) >= self._quorum()

    # --- small helpers ---------------------------------------------------------------------------

    def _quorum(self) -> int:
        return len(self._conf.voters) // 2 + 1

    def _peers(self) -> tuple[NodeId, ...]:
        return tuple(v for v in self._conf.voters if v != self._id)

    def _hard_state(self) -> HardState:
        return HardState(self._term, self._vote, self._log.committed)

    def _send(self, msg: Message) -> None:
        self._msgs.append(msg)

    def _set_role(self, role: Role) -> None:
        if role is not self._role:
            self._role = role
            self._events.append(RoleChanged(role, self._term))

    def _set_lead(self, lead: NodeId | None) -> None:
        if lead != self._lead:
            self._lead = lead
            self._events.append(LeaderChanged(lead, self._term))
            if self._forwarded:
                self._fail_reads([], lead)

    def _heard_from_leader(self, leader: NodeId, now: Micros) -> None:
        self._set_lead(leader)
        self._last_leader_contact = now
        self._push_election_deadline(now)

    def _in_lease(self, now: Micros) -> bool:
        """Check-quorum lease: we know a leader that was alive less than the minimum election
        timeout ago (a leader is always within its own lease until check-quorum deposes it)."""
        if not self._cfg.check_quorum or self._lead is None:
            return False
        if self._role is Role.LEADER:
            return True
        return now - self._last_leader_contact < self._cfg.election_timeout_min

    def _draw_timeout(self) -> Micros:
        return self._rng.randrange(self._cfg.election_timeout_min, self._cfg.election_timeout_max)

    def _reset_election_timer(self, now: Micros) -> None:
        """Restart the election timer with the current randomized timeout (voters only)."""
        self._election_deadline = now + self._timeout if self._id in self._conf.voters else None

    def _push_election_deadline(self, now: Micros) -> None:
        if self._role is not Role.LEADER:
            self._reset_election_timer(now)
