"""The SWIM member table: the rules that order updates about members (memberlist's
``aliveNode``, ``suspectNode``, ``deadNode`` and ``refute``).

Contract of each rule (``incarnation`` orders what is said about a member; the member itself is
the only one that raises its incarnation):

- ALIVE(node, inc, meta_version, meta): a new member joins; a record with a lower incarnation
  becomes ALIVE again; at the same incarnation a higher ``meta_version`` replaces the metadata of
  a live (alive or suspect) member. About ourselves, anything newer or different is refuted.
- SUSPECT(node, inc, source): an ALIVE member with ``inc >=`` its incarnation becomes SUSPECT and
  a suspicion timer starts; for a member SUSPECT at the same ``inc`` a distinct ``source``
  confirms it (Lifeguard: the timer shrinks); at a higher ``inc`` the member has refuted the
  suspicion we hold (we missed its ALIVE), so a new suspicion and timer start from now.
  About ourselves, we refute.
- DEAD(node, inc, source) with ``inc >=`` the member's incarnation: a member that leaves
  (``source == node``) becomes LEFT at once. Otherwise the member becomes DEAD only if we have
  suspected it, at that incarnation, for at least the minimum suspicion timeout; before that
  the DEAD counts as a SUSPECT from ``source`` (it starts or confirms our own suspicion).
  memberlist believes a DEAD at once (and demotes it to a suspicion only in push-pull
  merges); we do not, so that deaths declared across a partition, arriving after it heals,
  cannot kill a member on our side that never stopped answering us: it always gets a minimum
  timeout to refute. About ourselves, we refute (unless we are leaving).
- An accusation of ourselves at an incarnation we already outbid re-queues our current ALIVE
  (no new incarnation): its sender missed our refutation.
- Refutation: our incarnation becomes ``max(ours, accused) + 1``, the health score rises by one,
  and our ALIVE is queued for dissemination.

Every accepted change is re-queued for dissemination and reported as a ``SwimEvent``.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from consensus.core import Micros, NodeId
from consensus.errors import ConfigError, LocalProtocolError
from consensus.lifeguard import Awareness, Suspicion, suspicion_timeout
from consensus.swim_broadcast import BroadcastQueue
from consensus.swim_config import SwimConfig
from consensus.swim_messages import (
    MemberState,
    MemberStatus,
    Meta,
    Update,
    UpdateKind,
    member_states_size,
    meta_size,
)
from consensus.swim_types import EventKind, Member, SwimEvent

INCARNATION_MAX = 2**32 - 1
LIVE = (MemberStatus.ALIVE, MemberStatus.SUSPECT)
GONE = (MemberStatus.DEAD, MemberStatus.LEFT)


class MemberTable:
    """Members (self included), their suspicions, the broadcast queue and pending events.

    ``on_added(node)`` is called for every new member; ``on_suspicion(deadline, node)`` whenever
    a suspicion timer is set or moved (the owner fires ``suspicion_expired`` at that time).
    """

    def __init__(
        self,
        self_id: NodeId,
        meta: Meta,
        incarnation: int,
        config: SwimConfig,
        awareness: Awareness,
        now: Micros,
        on_added: Callable[[NodeId], None],
        on_suspicion: Callable[[Micros, NodeId], None],
    ) -> None:
        self.self_id = self_id
        self.config = config
        self.awareness = awareness
        self.check_meta(meta)
        self.members: dict[NodeId, Member] = {
            self_id: Member(self_id, MemberStatus.ALIVE, incarnation, 0, meta, now)
        }
        self.peers: list[NodeId] = []
        """Every other known member, in the order they became known."""
        self.suspicions: dict[NodeId, Suspicion] = {}
        self.broadcasts = BroadcastQueue()
        self.events: list[SwimEvent] = []
        self.leaving = False
        self._on_added = on_added
        self._snapshot: tuple[tuple[MemberState, ...], int] | None = None
        self._on_suspicion = on_suspicion

    # ----------------------------------------------------------------------------- queries
    @property
    def me(self) -> Member:
        return self.members[self.self_id]

    def check_meta(self, meta: Meta) -> None:
        """Raise ``ConfigError`` when ``meta`` is over the metadata budget."""
        size = meta_size(meta)
        if size > self.config.meta_budget:
            raise ConfigError(
                f"metadata of {size} bytes exceeds the {self.config.meta_budget} budget"
            )

    def random_peers(
        self, rng: random.Random, k: int, accept: Callable[[Member], bool]
    ) -> list[Member]:
        """Up to ``k`` distinct random peers passing ``accept`` (memberlist's kRandomNodes:
        at most 3·n random draws, so a mostly-rejected population ends early)."""
        peers = self.peers
        members = self.members
        n = len(peers)
        chosen: list[Member] = []
        if k <= 0 or n == 0:
            return chosen
        seen: set[int] = set()  # membership tests only, never iterated
        randrange = rng.randrange
        for _ in range(3 * n):
            i = randrange(n)
            if i in seen:
                continue
            seen.add(i)
            m = members[peers[i]]
            if accept(m):
                chosen.append(m)
                if len(chosen) == k:
                    break
        return chosen

    def full_state(self) -> tuple[MemberState, ...]:
        """Every known record (self included), as push-pull sends it (cached until a change)."""
        return self._state()[0]

    def full_state_size(self) -> int:
        """Encoded bytes of ``full_state()`` as a push-pull member list (cached until a change)."""
        return self._state()[1]

    def _state(self) -> tuple[tuple[MemberState, ...], int]:
        if self._snapshot is None:
            states = tuple(
                MemberState(m.node, m.status, m.incarnation, m.meta_version, m.meta)
                for m in self.members.values()
            )
            self._snapshot = (states, member_states_size(states))
        return self._snapshot

    # ----------------------------------------------------------------------------- changes
    def preload(self, state: MemberState, now: Micros, *, notify: bool = True) -> bool:
        """Add a known record silently (no event, no broadcast); False if already known.
        ``notify=False`` skips the ``on_added`` callback (bulk loading).

        A SUSPECT record is loaded as ALIVE: its suspicion timer did not survive, probing decides.
        """
        if state.node in self.members:
            return False
        status = MemberStatus.ALIVE if state.status == MemberStatus.SUSPECT else state.status
        self._add(
            state.node, status, state.incarnation, state.meta_version, state.meta, now, notify
        )
        return True

    def forget(self, node: NodeId) -> None:
        """Drop a member's record entirely (a dead member past gossip_to_the_dead_time)."""
        if node == self.self_id:
            raise LocalProtocolError("cannot forget ourselves")
        del self.members[node]
        self._snapshot = None
        self.suspicions.pop(node, None)
        self.peers.remove(node)

    def queue_self_alive(self) -> None:
        me = self.me
        self.broadcasts.queue(
            Update(UpdateKind.ALIVE, me.node, me.incarnation, me.node, me.meta_version, me.meta)
        )

    def set_meta(self, meta: Meta) -> None:
        """Publish new metadata under the next metadata version."""
        self.check_meta(meta)
        me = self.me
        me.meta = meta
        me.meta_version += 1
        self._snapshot = None
        if not self.leaving:
            self.queue_self_alive()

    def leave(self, now: Micros) -> None:
        """Mark ourselves LEFT and queue our departure (DEAD about ourselves, from ourselves)."""
        self.leaving = True
        me = self.me
        me.status = MemberStatus.LEFT
        self._snapshot = None
        me.since = now
        self.broadcasts.queue(Update(UpdateKind.DEAD, me.node, me.incarnation, me.node))

    def apply(self, u: Update, now: Micros) -> None:
        """Apply one piggybacked update."""
        if u.kind == UpdateKind.ALIVE:
            self.alive(u, now)
        elif u.kind == UpdateKind.SUSPECT:
            self.suspect(u.node, u.incarnation, u.source, now)
        else:
            self.dead(u.node, u.incarnation, u.source, now)

    def merge(self, states: tuple[MemberState, ...], source: NodeId, now: Micros) -> None:
        """Merge a push-pull state: a remote DEAD or SUSPECT becomes a local suspicion (from
        ``source``), but is not a confirmation of a suspicion we already hold."""
        members = self.members
        for s in states:
            m = members.get(s.node)
            if (
                m is not None
                and m.status == s.status
                and m.incarnation == s.incarnation
                and m.meta_version == s.meta_version
            ):
                continue  # nothing new (the common case in a stable cluster)
            if s.status == MemberStatus.ALIVE:
                u = Update(UpdateKind.ALIVE, s.node, s.incarnation, s.node, s.meta_version, s.meta)
                self.alive(u, now)
            elif s.status == MemberStatus.LEFT:
                self.dead(s.node, s.incarnation, s.node, now)
            elif not (
                m is not None
                and m.status == MemberStatus.SUSPECT
                and m.incarnation == s.incarnation
            ):
                # A remote suspicion (or death) starts ours, from ``source``; it never confirms
                # one we hold at that incarnation: the peer's knowledge may be second-hand, and
                # only independent accusers may shrink the timer.
                self.suspect(s.node, s.incarnation, source, now)

    def alive(self, u: Update, now: Micros) -> None:
        meta = u.meta
        if meta is None:
            return
        m = self.members.get(u.node)
        if u.node == self.self_id:
            assert m is not None
            if self.leaving or (u.incarnation, u.meta_version) < (m.incarnation, m.meta_version):
                return
            if (u.incarnation, u.meta_version, meta) == (m.incarnation, m.meta_version, m.meta):
                return
            self.refute(u.incarnation, u.meta_version)
            return
        if m is None:
            if meta_size(meta) > self.config.meta_budget:
                return
            self._add(u.node, MemberStatus.ALIVE, u.incarnation, u.meta_version, meta, now)
            self.broadcasts.queue(u)
            self._event(EventKind.JOINED, self.members[u.node], u.node, now)
            return
        newer_inc = u.incarnation > m.incarnation
        newer_meta = u.incarnation == m.incarnation and u.meta_version > m.meta_version
        if not newer_inc and not (newer_meta and m.status in LIVE):
            return
        if meta != m.meta and meta_size(meta) > self.config.meta_budget:
            return
        old_status, old_meta = m.status, m.meta
        m.incarnation, m.meta_version, m.meta = u.incarnation, u.meta_version, meta
        self._snapshot = None
        self.broadcasts.queue(u)
        if newer_inc and old_status != MemberStatus.ALIVE:
            self.suspicions.pop(u.node, None)
            m.status = MemberStatus.ALIVE
            m.since = now
            kind = EventKind.JOINED if old_status == MemberStatus.LEFT else EventKind.ALIVE
            self._event(kind, m, u.node, now)
        elif meta != old_meta:
            self._event(EventKind.UPDATED, m, u.node, now)

    def suspect(self, node: NodeId, incarnation: int, source: NodeId, now: Micros) -> None:
        m = self.members.get(node)
        if m is None:
            return
        if incarnation < m.incarnation:
            if node == self.self_id:
                self._remind()
            return
        if m.status == MemberStatus.SUSPECT and incarnation == m.incarnation:
            suspicion = self.suspicions.get(node)
            if suspicion is not None and suspicion.confirm(source):
                self._on_suspicion(suspicion.deadline, node)
                self.broadcasts.queue(Update(UpdateKind.SUSPECT, node, incarnation, source))
            return
        # A suspicion at a higher incarnation than ours is a new accusation: the member
        # refuted our suspicion (we missed its ALIVE) and is suspected afresh, so it starts a
        # new timer rather than confirming the old one, which may be nearly due.
        if m.status not in LIVE:
            return
        if node == self.self_id:
            if not self.leaving:
                self.refute(incarnation, m.meta_version)
            return
        cfg = self.config
        n = len(self.members)
        k = cfg.suspicion_mult - 2
        if n - 2 < k:
            k = 0
        minimum = suspicion_timeout(cfg.suspicion_mult, n, cfg.probe_interval)
        suspicion = Suspicion(source, k, minimum, cfg.suspicion_max_timeout_mult * minimum, now)
        self.suspicions[node] = suspicion
        self._on_suspicion(suspicion.deadline, node)
        m.incarnation = incarnation
        m.status = MemberStatus.SUSPECT
        self._snapshot = None
        m.since = now
        self.broadcasts.queue(Update(UpdateKind.SUSPECT, node, incarnation, source))
        self._event(EventKind.SUSPECTED, m, source, now)

    def suspicion_due(self, node: NodeId, when: Micros) -> bool:
        """True when ``node``'s suspicion timer is set for ``when`` (not moved or cancelled)."""
        s = self.suspicions.get(node)
        return s is not None and s.deadline == when

    def suspicion_expired(self, node: NodeId, now: Micros) -> None:
        """The suspicion timer of ``node`` fired: declare it dead (from us)."""
        self.suspicions.pop(node, None)
        m = self.members.get(node)
        if m is not None and m.status == MemberStatus.SUSPECT:
            self._kill(m, m.incarnation, self.self_id, now)

    def dead(self, node: NodeId, incarnation: int, source: NodeId, now: Micros) -> None:
        m = self.members.get(node)
        if m is None:
            return
        if incarnation < m.incarnation:
            if node == self.self_id:
                self._remind()
            return
        if m.status in GONE:
            return
        if node == self.self_id:
            if not self.leaving:
                self.refute(incarnation, m.meta_version)
            return
        if source != node:
            suspicion = self.suspicions.get(node)
            if (
                suspicion is None
                or incarnation > m.incarnation  # our suspicion is of a refuted incarnation
                or now - suspicion.start < suspicion.minimum
            ):
                # Too early to believe it: the member has not had a full minimum suspicion
                # timeout, as seen from here, to refute. Count it as a suspicion from source.
                self.suspect(node, incarnation, source, now)
                return
        self._kill(m, incarnation, source, now)

    def _kill(self, m: Member, incarnation: int, source: NodeId, now: Micros) -> None:
        node = m.node
        self.suspicions.pop(node, None)
        m.incarnation = incarnation
        m.status = MemberStatus.LEFT if source == node else MemberStatus.DEAD
        self._snapshot = None
        m.since = now
        self.broadcasts.queue(Update(UpdateKind.DEAD, node, incarnation, source))
        self._event(EventKind.LEFT if source == node else EventKind.DEAD, m, source, now)

    def _remind(self) -> None:
        """Someone accuses an incarnation of ours we already refuted: our refutation did not
        reach it, so disseminate our current ALIVE again (memberlist waits for push-pull)."""
        if not self.leaving and self.self_id not in self.broadcasts:
            self.queue_self_alive()

    def refute(self, accused_incarnation: int, seen_meta_version: int) -> None:
        """Someone holds an older or different version of us: outbid it."""
        me = self.me
        if accused_incarnation >= INCARNATION_MAX:
            raise LocalProtocolError("incarnation space exhausted")
        me.incarnation = max(me.incarnation, accused_incarnation) + 1
        me.meta_version = max(me.meta_version, seen_meta_version)
        self._snapshot = None
        self.awareness.apply_delta(1)
        self.queue_self_alive()

    # ----------------------------------------------------------------------------- helpers
    def _add(
        self,
        node: NodeId,
        status: MemberStatus,
        incarnation: int,
        meta_version: int,
        meta: Meta,
        now: Micros,
        notify: bool = True,
    ) -> None:
        self.members[node] = Member(node, status, incarnation, meta_version, meta, now)
        self._snapshot = None
        self.peers.append(node)
        if notify:
            self._on_added(node)

    def _event(self, kind: EventKind, m: Member, source: NodeId, now: Micros) -> None:
        self.events.append(
            SwimEvent(kind, m.node, now, m.incarnation, m.meta_version, m.meta, source)
        )
