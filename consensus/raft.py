"""A sans-I/O Raft core in the style of etcd's raft (DESIGN §2, §3, §8).

``RaftNode`` is a plain object fed messages (``step``) and time (``tick``); it never reads a
clock, touches a socket or sleeps. Its outputs are taken with ``ready()`` as one ``Ready`` value
and acknowledged with ``advance(ready)``. Times are integer microseconds handed in by the driver;
randomness (the election timeout) comes from the ``random.Random`` given at construction.

Implemented: leader election (§5.2) with pre-vote and check-quorum (thesis §9.6), randomized
election timeouts, log replication (§5.3) with fast conflict back-off and flow control
(probe / replicate states, a window of in-flight appends), commitment only of entries of the
leader's current term by quorum (§5.4.2, with a no-op entry at the start of each term),
heartbeats, durable term and vote. Determinism: peers are always visited in sorted order, so a
seed gives the same trace whatever ``PYTHONHASHSEED`` is.

Room is left for the next issue (snapshots, membership changes, ReadIndex, leadership transfer):
``EntryKind.CONFIG``, ``ConfState.learners``, ``VoteRequest.transfer``, ``Heartbeat.context``
and ``Storage.snapshot``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from consensus.core import Micros, NodeId
from consensus.errors import ConfigError, LocalProtocolError, NotLeader
from consensus.messages import (
    AppendEntries,
    AppendResponse,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Heartbeat,
    HeartbeatResponse,
    Message,
    PreVoteRequest,
    PreVoteResponse,
    VoteRequest,
    VoteResponse,
)
from consensus.raft_config import RaftConfig
from consensus.raft_leader import Replication
from consensus.raft_log import RaftLog
from consensus.raft_progress import Progress
from consensus.raft_types import LeaderChanged, RaftEvent, Ready, Role, RoleChanged
from consensus.storage import MemoryStorage, Storage

__all__ = [
    "ConfState",
    "ConfigError",
    "Entry",
    "EntryKind",
    "HardState",
    "LeaderChanged",
    "MemoryStorage",
    "Message",
    "NotLeader",
    "RaftConfig",
    "RaftEvent",
    "RaftNode",
    "Ready",
    "Role",
    "RoleChanged",
    "Storage",
]


class RaftNode:
    """One Raft node's state machine.

    ``voters`` is the bootstrap voter set, used when ``storage`` records no membership (an empty
    ``ConfState``); otherwise the stored membership wins. A node not among the voters never
    campaigns. A restarted node is a new ``RaftNode`` over the same persisted ``storage``;
    ``now`` is the time of construction (its first election deadline counts from it) and
    ``applied`` the index the driver's state machine already reflects (entries after it up to the
    stored commit are handed out again in ``Ready.committed``).

    Proposals on a non-leader raise ``NotLeader(leader_hint)``; the caller forwards them.
    """

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
        chosen = cs.voters if cs.voters else tuple(voters)
        self._voters: tuple[NodeId, ...] = tuple(sorted(set(chosen)))
        if not self._voters:
            raise ConfigError("a Raft group needs at least one voter")
        self._id = id
        self._peers = tuple(v for v in self._voters if v != id)
        self._quorum = len(self._voters) // 2 + 1
        self._storage = storage
        self._rng = rng
        self._log = RaftLog(storage, committed=hs.commit, applied=applied)
        self._term = hs.term
        self._vote = hs.vote
        self._persisted_hs = hs
        self._role = Role.FOLLOWER
        self._lead: NodeId | None = None
        self._msgs: list[Message] = []
        self._events: list[RaftEvent] = []
        self._votes: dict[NodeId, bool] = {}
        self._leader: Replication | None = None
        self._outstanding: Ready | None = None
        self._last_leader_contact: Micros = now
        self._timeout = self._draw_timeout()
        self._election_deadline: Micros | None = None
        self._heartbeat_deadline: Micros | None = None
        self._quorum_deadline: Micros | None = None
        self.dropped_messages = 0
        """Messages ignored because they were addressed to another node."""
        self._reset_election_timer(now)

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
    def voters(self) -> tuple[NodeId, ...]:
        """The voter set, sorted."""
        return self._voters

    @property
    def commit_index(self) -> int:
        return self._log.committed

    @property
    def applied_index(self) -> int:
        """Highest index the driver has applied (acknowledged through ``advance``)."""
        return self._log.applied

    @property
    def last_index(self) -> int:
        return self._log.last_index()

    @property
    def storage(self) -> Storage:
        return self._storage

    @property
    def config(self) -> RaftConfig:
        return self._cfg

    def log_entries(self, lo: int = 1) -> list[Entry]:
        """The log from ``lo`` on, including entries not yet persisted (for checkers)."""
        return self._log.entries(max(lo, self._log.first_index()))

    def progress(self, peer: NodeId) -> Progress | None:
        """The leader's replication progress of ``peer`` (``None`` when not leader)."""
        return self._leader.progress.get(peer) if self._leader else None

    # --- driving ---------------------------------------------------------------------------------

    def next_deadline(self) -> Micros | None:
        """Absolute time (µs) at which ``tick`` is next needed; ``None`` if no timer runs."""
        if self._role is Role.LEADER:
            deadlines = [
                d for d in (self._heartbeat_deadline, self._quorum_deadline) if d is not None
            ]
            return min(deadlines) if deadlines else None
        return self._election_deadline

    def tick(self, now: Micros) -> None:
        """Fire the timers due at ``now``: heartbeat and check-quorum on a leader, the election
        timeout elsewhere. Each due timer fires once, however late the tick."""
        if self._role is Role.LEADER:
            if self._quorum_deadline is not None and now >= self._quorum_deadline:
                self._quorum_deadline = now + self._cfg.election_timeout_min
                if self._leader is None or not self._leader.quorum_active():
                    self._become_follower(self._term, None, now)
                    return
            if self._heartbeat_deadline is not None and now >= self._heartbeat_deadline:
                self._heartbeat_deadline = now + self._cfg.heartbeat_interval
                if self._leader is not None:
                    self._leader.broadcast_heartbeat()
        elif self._election_deadline is not None and now >= self._election_deadline:
            self._start_election(now)

    def campaign(self, now: Micros) -> None:
        """Start an election now (a local command; a no-op on a leader or a non-voter).
        With pre-vote on, a pre-vote round comes first."""
        if self._role is not Role.LEADER:
            self._start_election(now)

    def propose(self, data: bytes, now: Micros) -> int:
        """Append ``data`` to the log as a NORMAL entry; returns its index.

        The entry is committed when a later ``Ready.committed`` carries it; it may be lost if
        leadership changes first (the caller sees a different entry at that index). Raises
        ``NotLeader(leader_hint)`` on a non-leader.
        """
        if not isinstance(data, bytes):
            raise LocalProtocolError(f"proposal data must be bytes, got {type(data).__name__}")
        leader = self._leader
        if leader is None:
            raise NotLeader(self._lead)
        index = leader.append(EntryKind.NORMAL, data)
        leader.broadcast_append()
        return index

    def has_ready(self) -> bool:
        """True when ``ready()`` has something to hand out (False while a Ready is outstanding)."""
        if self._outstanding is not None:
            return False
        hs = self._persisted_hs
        log = self._log
        return bool(
            self._msgs
            or self._events
            or log.unstable
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
        hs = self._hard_state()
        committed: list[Entry] = []
        if self._log.committed > self._log.applied:
            committed = self._log.entries(self._log.applied + 1, self._log.committed + 1)
        rd = Ready(
            hard_state=hs if hs != self._persisted_hs else None,
            entries=list(self._log.unstable),
            messages=self._msgs,
            committed=committed,
            events=self._events,
        )
        self._msgs = []
        self._events = []
        self._outstanding = rd
        return rd

    def advance(self, ready: Ready) -> None:
        """The driver persisted, sent and applied ``ready`` (the last one taken)."""
        if ready is not self._outstanding:
            raise LocalProtocolError("advance() must be given the Ready last returned by ready()")
        if ready.hard_state is not None:
            self._persisted_hs = ready.hard_state
        if ready.entries:
            last = ready.entries[-1]
            self._log.stable_to(last.index, last.term)
        if ready.committed:
            self._log.applied_to(ready.committed[-1].index)
        self._outstanding = None

    def step(self, msg: Message, now: Micros) -> None:
        """Handle one message received at ``now``. Messages for another node are dropped."""
        if msg.dst != self._id or msg.src == self._id:
            self.dropped_messages += 1
            return
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
                lead = msg.src if isinstance(msg, AppendEntries | Heartbeat) else None
                self._become_follower(msg.term, lead, now)
        elif msg.term < self._term:
            if isinstance(msg, AppendEntries | Heartbeat):
                # A stale leader: tell it about our term so it steps down (needed with
                # check-quorum/pre-vote, where its higher-term rivals may never reach it).
                self._send(AppendResponse(self._id, msg.src, self._term, index=0))
            elif isinstance(msg, PreVoteRequest):
                self._send(PreVoteResponse(self._id, msg.src, self._term, reject=True))
            return
        if isinstance(msg, PreVoteRequest | VoteRequest):
            self._handle_vote_request(msg, now)
        elif self._leader is not None:
            self._leader.handle(msg)
        elif self._role is Role.FOLLOWER:
            self._step_follower(msg, now)
        else:
            self._step_candidate(msg, now)

    # --- per-role handlers -----------------------------------------------------------------------

    def _step_follower(self, msg: Message, now: Micros) -> None:
        if isinstance(msg, AppendEntries):
            self._heard_from_leader(msg.src, now)
            self._handle_append(msg)
        elif isinstance(msg, Heartbeat):
            self._heard_from_leader(msg.src, now)
            self._log.commit_to(msg.commit)
            self._send(HeartbeatResponse(self._id, msg.src, self._term, msg.context))

    def _step_candidate(self, msg: Message, now: Micros) -> None:
        if isinstance(msg, AppendEntries | Heartbeat):
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
        if msg.src in self._voters:
            self._votes.setdefault(msg.src, not msg.reject)
        granted = sum(1 for v in self._votes.values() if v)
        rejected = len(self._votes) - granted
        if granted >= self._quorum:
            if pre:
                self._become_candidate(now)
            else:
                self._become_leader(now)
        elif rejected >= self._quorum:
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

    # --- transitions -----------------------------------------------------------------------------

    def _start_election(self, now: Micros) -> None:
        if self._id not in self._voters:
            return
        if self._cfg.pre_vote:
            self._become_pre_candidate(now)
        else:
            self._become_candidate(now)

    def _become_follower(self, term: int, lead: NodeId | None, now: Micros) -> None:
        self._reset(term, now)
        self._set_role(Role.FOLLOWER)
        self._set_lead(lead)
        if lead is not None:
            self._last_leader_contact = now

    def _become_pre_candidate(self, now: Micros) -> None:
        # Like etcd: the term does not change; the randomized timeout restarts.
        self._votes = {self._id: True}
        self._leader = None
        self._timeout = self._draw_timeout()
        self._reset_election_timer(now)
        self._set_role(Role.PRE_CANDIDATE)
        self._set_lead(None)
        if not self._poll_won():
            last_index, last_term = self._log.last_index(), self._log.last_term()
            for peer in self._peers:
                self._send(PreVoteRequest(self._id, peer, self._term + 1, last_index, last_term))
        else:
            self._become_candidate(now)

    def _become_candidate(self, now: Micros) -> None:
        self._reset(self._term + 1, now)
        self._vote = self._id
        self._votes = {self._id: True}
        self._set_role(Role.CANDIDATE)
        self._set_lead(None)
        if self._poll_won():
            self._become_leader(now)
            return
        last_index, last_term = self._log.last_index(), self._log.last_term()
        for peer in self._peers:
            self._send(VoteRequest(self._id, peer, self._term, last_index, last_term))

    def _become_leader(self, now: Micros) -> None:
        self._set_role(Role.LEADER)
        self._set_lead(self._id)
        self._election_deadline = None
        self._leader = Replication(
            self._id, self._term, self._voters, self._log, self._cfg, self._send
        )
        self._heartbeat_deadline = now + self._cfg.heartbeat_interval
        self._quorum_deadline = (
            now + self._cfg.election_timeout_min if self._cfg.check_quorum else None
        )
        self._leader.append(EntryKind.NOOP, b"")
        self._leader.broadcast_append()

    def _reset(self, term: int, now: Micros) -> None:
        if term != self._term:
            self._term = term
            self._vote = None
            self._timeout = self._draw_timeout()
        self._votes = {}
        self._leader = None
        self._heartbeat_deadline = None
        self._quorum_deadline = None
        self._reset_election_timer(now)

    def _poll_won(self) -> bool:
        return sum(1 for v in self._votes.values() if v) >= self._quorum

    # --- small helpers ---------------------------------------------------------------------------

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
        self._election_deadline = now + self._timeout if self._id in self._voters else None

    def _push_election_deadline(self, now: Micros) -> None:
        if self._role is not Role.LEADER:
            self._reset_election_timer(now)
