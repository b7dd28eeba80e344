"""A leader's replication machinery for one term (§5.3, §5.4.2).

``Replication`` exists only while its node leads. It tracks each voter's ``Progress``, decides
what to send (respecting flow control), computes where to retry after a rejection (fast
back-off), advances the commit index by quorum of current-term entries, and checks quorum
activity. It emits messages through the ``send`` callable its node gives it.
"""

from __future__ import annotations

from collections.abc import Callable

from consensus.core import NodeId
from consensus.messages import (
    AppendEntries,
    AppendResponse,
    Entry,
    EntryKind,
    Heartbeat,
    HeartbeatResponse,
    Message,
)
from consensus.raft_config import RaftConfig
from consensus.raft_log import RaftLog
from consensus.raft_progress import Progress, ProgressState


class Replication:
    """Leader state of ``node_id`` in ``term`` over ``voters`` (sorted)."""

    def __init__(
        self,
        node_id: NodeId,
        term: int,
        voters: tuple[NodeId, ...],
        log: RaftLog,
        config: RaftConfig,
        send: Callable[[Message], None],
    ) -> None:
        self.id = node_id
        self.term = term
        self.voters = voters
        self.peers = tuple(v for v in voters if v != node_id)
        self.quorum = len(voters) // 2 + 1
        self.log = log
        self.cfg = config
        self._send = send
        next_index = log.last_index() + 1
        self.progress = {v: Progress(next_index, config.max_inflight_msgs) for v in voters}
        own = self.progress[node_id]
        own.maybe_update(log.last_index())
        own.become_replicate()
        own.recent_active = True

    def append(self, kind: EntryKind, data: bytes) -> int:
        """Append a new entry of this term to the leader's log; returns its index."""
        index = self.log.last_index() + 1
        self.log.append([Entry(index, self.term, kind, data)])
        self.progress[self.id].maybe_update(index)
        self.maybe_commit()
        return index

    def maybe_commit(self) -> bool:
        """Commit the highest index a quorum holds, if it is of the current term (§5.4.2)."""
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
        if prev_term is None:
            return False  # compacted: needs a snapshot (snapshot issue)
        hi = pr.next + self.cfg.max_entries_per_msg
        ents = self.log.entries(pr.next, hi, self.cfg.max_bytes_per_msg)
        if not ents and not send_if_empty:
            return False
        self._send(
            AppendEntries(self.id, to, self.term, prev, prev_term, tuple(ents), self.log.committed)
        )
        pr.sent_entries(ents[-1].index if ents else None)
        return True

    def broadcast_append(self) -> None:
        """Send every follower what it lacks (or an empty append carrying the commit index)."""
        for peer in self.peers:
            self.send_append(peer, send_if_empty=True)

    def broadcast_heartbeat(self) -> None:
        """Heartbeat every follower; the commit sent never exceeds what it is known to hold."""
        for peer in self.peers:
            commit = min(self.progress[peer].match, self.log.committed)
            self._send(Heartbeat(self.id, peer, self.term, commit))

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
            if not updated and not (pr.state is ProgressState.PROBE and pr.match == msg.index):
                return  # a stale or duplicate acknowledgement
            if pr.state is ProgressState.PROBE:
                pr.become_replicate()
            else:
                pr.inflights.free_le(msg.index)
            if self.maybe_commit():
                self.broadcast_append()
            while self.send_append(msg.src, send_if_empty=False):
                pass
        elif isinstance(msg, HeartbeatResponse):
            pr.recent_active = True
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
