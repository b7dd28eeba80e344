"""A leader's replication machinery for one term (§5.3, §5.4.2).

``Replication`` exists only while its node leads. It tracks the ``Progress`` of each member
(voters and learners), decides what to send (respecting flow control; a snapshot when the
entries a follower needs are compacted), computes where to retry after a rejection (fast
back-off), advances the commit index by quorum of current-term entries (voters only: learners
never count), and checks quorum activity. It emits messages through the ``send`` callable its
node gives it.

Durability of the leader's own log (Raft thesis §10.2.1): the leader's own ``Progress.match``
counts only entries its driver has persisted (``self_stable``), never what it merely appended,
so the driver may send AppendEntries in parallel with the leader's own fsync: an entry commits
only once a quorum holds it durably, whichever members that quorum includes.

Batching: a proposal (``append``) or an acknowledgement that advances the commit index does not
send at once; it marks the replication dirty, and ``flush`` (called when the node's Ready is
taken) sends each follower one AppendEntries carrying everything new since (as many as flow
control and ``max_entries_per_msg`` allow), so proposals that arrive together travel together.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from consensus.core import NodeId
from consensus.errors import SnapshotUnavailableError
from consensus.messages import (
    AppendEntries,
    AppendResponse,
    ConfState,
    Entry,
    EntryKind,
    Heartbeat,
    HeartbeatResponse,
    Message,
    Snapshot,
    SnapshotProgress,
)
from consensus.raft_config import RaftConfig
from consensus.raft_log import RaftLog
from consensus.raft_progress import Progress, ProgressState
from consensus.raft_snapshot import snapshot_chunk

SNAPSHOT_RETRY = 2
"""Heartbeats that followed a snapshot chunk and came back answered without its
acknowledgement, before the chunk counts as lost. Messages to one follower travel in order on
one stream, so one such answer already shows the loss; the second tolerates a reordering when
a stream is replaced."""

SNAPSHOT_MARK = b"s"
"""First byte of the heartbeat ``context`` naming the snapshot chunk it followed (9 bytes in
all, unlike a ReadIndex round's 8)."""


def snapshot_mark(seq: int) -> bytes:
    """The heartbeat context telling that snapshot chunk ``seq`` was sent before it."""
    return SNAPSHOT_MARK + (seq % 2**64).to_bytes(8, "big")


class Replication:
    """Leader state of ``node_id`` in ``term`` over the membership ``conf``."""

    def __init__(
        self,
        node_id: NodeId,
        term: int,
        conf: ConfState,
        log: RaftLog,
        config: RaftConfig,
        send: Callable[[Message], None],
    ) -> None:
        self.id = node_id
        self.term = term
        self.log = log
        self.cfg = config
        self._send = send
        self.voters: tuple[NodeId, ...] = ()
        self.learners: tuple[NodeId, ...] = ()
        self.peers: tuple[NodeId, ...] = ()
        self.quorum = 1
        self.snapshot_retry = SNAPSHOT_RETRY
        """Answers to heartbeats sent after a snapshot chunk, that chunk unacknowledged, after
        which the chunk is taken as lost and the snapshot sent again."""
        self.progress: dict[NodeId, Progress] = {}
        self.pending_append = False
        """Entries were appended (or acknowledged) that ``flush`` has not sent on yet."""
        self.pending_commit = False
        """The commit index moved: ``flush`` tells every follower (an empty append if needed)."""
        own = self._new_progress(node_id, active=True)
        own.maybe_update(log.offset - 1)  # only what is durable counts (see the module doc)
        own.become_replicate()
        self._set_members(conf, added_active=False)

    def _new_progress(self, node: NodeId, *, active: bool) -> Progress:
        pr = Progress(self.log.last_index() + 1, self.cfg.max_inflight_msgs)
        pr.recent_active = active
        self.progress[node] = pr
        return pr

    def set_members(self, conf: ConfState) -> None:
        """Adopt a new membership: progress for new members (probing from our last index, and
        counted as active until the next check-quorum so that adding a member cannot depose
        the leader before the member had a chance to answer), none for removed ones (the leader
        keeps its own even when it is not a voter)."""
        self._set_members(conf, added_active=True)

    def _set_members(self, conf: ConfState, *, added_active: bool) -> None:
        self.voters = conf.voters
        self.learners = conf.learners
        members = set(conf.voters) | set(conf.learners)
        self.peers = tuple(sorted(members - {self.id}))
        self.quorum = len(conf.voters) // 2 + 1
        for node in self.peers:
            if node not in self.progress:
                self._new_progress(node, active=added_active)
        for node in [n for n in self.progress if n not in members and n != self.id]:
            del self.progress[node]

    def is_quorum(self, nodes: Iterable[NodeId]) -> bool:
        """Do ``nodes`` include a majority of the voters?"""
        have = set(nodes)
        return sum(1 for v in self.voters if v in have) >= self.quorum

    def append(self, kind: EntryKind, data: bytes) -> int:
        """Append a new entry of this term to the leader's log; returns its index. It is sent
        at the next ``flush`` and counts toward the quorum once persisted (``self_stable``)."""
        index = self.log.last_index() + 1
        self.log.append([Entry(index, self.term, kind, data)])
        self.pending_append = True
        return index

    def self_stable(self, index: int) -> None:
        """The driver persisted this leader's log up to ``index``: count it, maybe commit."""
        if self.progress[self.id].maybe_update(index) and self.maybe_commit():
            self.pending_commit = True

    def dirty(self) -> bool:
        """Is there something for ``flush`` to send?"""
        return self.pending_append or self.pending_commit

    def flush(self) -> None:
        """Send every follower what it lacks (within flow control) if entries were appended
        since the last flush, and an empty append carrying the commit index to those that got
        nothing when the commit index moved."""
        if not (self.pending_append or self.pending_commit):
            return
        commit = self.pending_commit
        self.pending_append = self.pending_commit = False
        for peer in self.peers:
            sent = False
            while self.send_append(peer, send_if_empty=False):
                sent = True
            if commit and not sent:
                self.send_append(peer, send_if_empty=True)

    def maybe_commit(self) -> bool:
        """Commit the highest index a quorum holds, if it is of the current term (§5.4.2)."""
        if not self.voters:
            return False
        matches = sorted((self.progress[v].match for v in self.voters), reverse=True)
        index = matches[self.quorum - 1]
        if index > self.log.committed and self.log.term(index) == self.term:
            return self.log.commit_to(index)
        return False

    def send_append(self, to: NodeId, *, send_if_empty: bool) -> bool:
        """Send ``to`` the entries from its ``next`` on, unless flow control pauses it.
        Returns whether a message went out."""
        pr = self.progress[to]
        if pr.is_paused():
            return False
        prev = pr.next - 1
        prev_term = self.log.term(prev)
        if prev_term is None or pr.next < self.log.first_index():
            return self.send_snapshot(to)
        hi = pr.next + self.cfg.max_entries_per_msg
        ents = self.log.entries(pr.next, hi, self.cfg.max_bytes_per_msg)
        if not ents and not send_if_empty:
            return False
        self._send(
            AppendEntries(self.id, to, self.term, prev, prev_term, tuple(ents), self.log.committed)
        )
        pr.sent_entries(ents[-1].index if ents else None)
        return True

    def send_snapshot(self, to: NodeId) -> bool:
        """Start sending ``to`` the latest snapshot (its next entries are compacted), first
        chunk first; False when no snapshot is available yet (retried on its next heartbeat
        answer)."""
        snap = self._snapshot()
        if snap is None:
            return False
        self.progress[to].become_snapshot(snap.meta.index)  # counts the first chunk, offset 0
        self._send(snapshot_chunk(self.id, to, self.term, snap, 0, self.cfg.max_bytes_per_msg))
        return True

    def _snapshot(self) -> Snapshot | None:
        snap = self.log.pending_snapshot
        if snap is None:
            try:
                snap = self.log.storage.snapshot()
            except SnapshotUnavailableError:
                return None
        return snap

    def _snapshot_progress(self, msg: SnapshotProgress, pr: Progress) -> None:
        """The follower holds part of the snapshot being sent: send the next chunk (or start
        over if a newer snapshot replaced it meanwhile)."""
        if pr.state is not ProgressState.SNAPSHOT or msg.index != pr.pending_snapshot:
            return  # stale: about a snapshot we are no longer sending
        snap = self._snapshot()
        if snap is None or snap.meta.index != pr.pending_snapshot:
            self.send_snapshot(msg.src)
            return
        pr.sent_snapshot_chunk(msg.offset)  # heartbeats count from this chunk on
        self._send(
            snapshot_chunk(
                self.id, msg.src, self.term, snap, msg.offset, self.cfg.max_bytes_per_msg
            )
        )

    def _resend_chunk(self, to: NodeId, pr: Progress) -> bool:
        """Send the latest chunk again (it or its answer was lost); the follower keeps what
        it holds and asks on from there (a follower that lost everything asks for offset 0).
        False when that snapshot is no longer held (a newer one replaced it)."""
        snap = self._snapshot()
        if snap is None or snap.meta.index != pr.pending_snapshot:
            return False
        offset = pr.snapshot_offset
        pr.sent_snapshot_chunk(offset)
        self._send(snapshot_chunk(self.id, to, self.term, snap, offset, self.cfg.max_bytes_per_msg))
        return True

    def broadcast_append(self) -> None:
        """Send every follower what it lacks (or an empty append carrying the commit index)."""
        for peer in self.peers:
            self.send_append(peer, send_if_empty=True)

    def broadcast_heartbeat(self, context: bytes = b"") -> None:
        """Heartbeat every follower; the commit sent never exceeds what it is known to hold.
        A non-empty ``context`` (a ReadIndex round) is echoed back in the responses."""
        for peer in self.peers:
            pr = self.progress[peer]
            commit = min(pr.match, self.log.committed)
            ctx = context
            if not ctx and pr.state is ProgressState.SNAPSHOT:
                ctx = snapshot_mark(pr.snapshot_seq)  # its answer tells the chunk was lost
            self._send(Heartbeat(self.id, peer, self.term, commit, ctx))

    def quorum_active(self) -> bool:
        """Check-quorum: did a quorum talk to us since the last check? Resets activity."""
        active = sum(1 for v in self.voters if v == self.id or self.progress[v].recent_active)
        for peer in self.peers:
            self.progress[peer].recent_active = False
        return active >= self.quorum

    def handle(self, msg: Message) -> None:
        """Handle a follower's answer at the current term."""
        pr = self.progress.get(msg.src)
        if pr is None:
            return
        if isinstance(msg, AppendResponse):
            pr.recent_active = True
            if msg.reject:
                if pr.maybe_decrease(msg.index, self.retry_index(msg)):
                    self.send_append(msg.src, send_if_empty=True)
                return
            updated = pr.maybe_update(msg.index)
            if pr.state is ProgressState.SNAPSHOT:
                if pr.match + 1 < self.log.first_index():
                    return  # still behind what the log holds: wait for the snapshot's answer
                pr.become_replicate()
            elif not updated and not (pr.state is ProgressState.PROBE and pr.match == msg.index):
                return  # a stale or duplicate acknowledgement
            elif pr.state is ProgressState.PROBE:
                pr.become_replicate()
            else:
                pr.inflights.free_le(msg.index)
            if self.maybe_commit():
                self.pending_commit = True
            self.pending_append = True  # the window opened: send what it lacks at flush
        elif isinstance(msg, SnapshotProgress):
            pr.recent_active = True
            self._snapshot_progress(msg, pr)
        elif isinstance(msg, HeartbeatResponse):
            pr.recent_active = True
            if pr.state is ProgressState.SNAPSHOT:
                # Only a heartbeat sent after the latest chunk, answered while that chunk is
                # not, shows a loss; a slow chunk round trip is progress not yet seen.
                if msg.context == snapshot_mark(pr.snapshot_seq):
                    pr.snapshot_heartbeats += 1
                if pr.snapshot_heartbeats < self.snapshot_retry:
                    return
                if self._resend_chunk(msg.src, pr):  # the chunk was lost: send it again
                    return
                pr.become_probe()  # the snapshot is gone: probe, then send the latest one
            pr.probe_sent = False
            if pr.state is ProgressState.REPLICATE and pr.inflights.full():
                pr.inflights.free_first_one()
            if pr.match < self.log.last_index():
                self.send_append(msg.src, send_if_empty=True)

    def retry_index(self, msg: AppendResponse) -> int:
        """Where to retry after a rejection: just past our last entry of the follower's
        conflicting term if we have that term, else the first index of that term in its log
        (or just past its log when it is too short)."""
        if msg.hint_term == 0:
            return msg.hint_index
        i = min(msg.index, self.log.last_index())
        while i > 0:
            t = self.log.term(i)
            if t is None or t <= msg.hint_term:
                break
            i -= 1
        if i > 0 and self.log.term(i) == msg.hint_term:
            return i + 1
        return msg.hint_index
