"""A tiny in-test message-passing network for Raft unit tests (not the simulator).

Messages are delivered instantly, in FIFO order, at the current virtual time; time only moves
when a test asks (``advance``/``run_until``), jumping to the next timer any node wants. Tests
can cut links, drop messages by predicate, crash and restart nodes (persisted storage survives),
add nodes, compact a node's log into a snapshot. Every ``flush`` checks the safety properties of
§5.4 as it goes.

Each node's state machine is the list of entries it applied; a snapshot's data is that list,
packed with msgpack, so a restored node's state is checked like any applied entry.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Iterable, Sequence

import msgpack

from consensus.core import Micros, NodeId
from consensus.errors import SnapshotUnavailableError
from consensus.messages import Entry, EntryKind, HardState, Message, Snapshot
from consensus.raft import RaftConfig, RaftNode, ReadState, Ready, Role
from consensus.storage import MemoryStorage

Drop = Callable[[Message], bool]


class SafetyViolation(AssertionError):
    """A Raft safety property was broken."""


class Net:
    """N Raft nodes wired together. ``seed`` drives every node's rng (printed on failure)."""

    def __init__(
        self,
        ids: Sequence[NodeId],
        seed: int = 0,
        config: RaftConfig | None = None,
        storages: dict[NodeId, MemoryStorage] | None = None,
    ) -> None:
        self.ids = sorted(ids)
        self.bootstrap = tuple(self.ids)
        """The bootstrap voter set every node (a later one too) is constructed with..."""
        self.node_voters: dict[NodeId, tuple[NodeId, ...]] = {}
        """...unless ``add_node`` gave it another (``()`` for a node of a log-founded group)."""
        self.seed = seed
        self.config = config or RaftConfig.local()
        self.rng = random.Random(seed)
        self.now: Micros = 0
        self.storages = storages or {}
        for i in self.ids:
            self.storages.setdefault(i, MemoryStorage())
        self.nodes: dict[NodeId, RaftNode] = {}
        for i in self.ids:
            self.nodes[i] = self._make(i)
        self.queue: deque[Message] = deque()
        self.cut: set[tuple[NodeId, NodeId]] = set()
        self.down: set[NodeId] = set()
        self.drop: Drop | None = None
        self.rewrite: Callable[[Message], Message | None] | None = None
        """Transforms each delivered message; returning ``None`` drops it."""
        self.delivered: list[Message] = []
        self.applied: dict[NodeId, list[Entry]] = {i: [] for i in self.ids}
        self.committed: dict[int, Entry] = {}
        self.commit_term_bound: dict[int, int] = {}
        """For each applied index, the highest term any node had when it was first applied: a
        leader of a higher term was elected after the commit and must hold the entry."""
        self.leaders: dict[int, NodeId] = {}
        self.events: list[tuple[NodeId, object]] = []
        self.leader_marks: dict[tuple[NodeId, int], tuple[int, int]] = {}
        """(leader, term) -> (index, term) of its last entry when first seen leading."""
        self.chaos = random.Random(f"chaos/{seed}")
        self.reorder = 0.0
        """Probability that a delivery picks a random queued message instead of the oldest."""
        self.duplicate = 0.0
        """Probability that a delivered message is also queued again (delivered twice)."""
        self.delay = 0.0
        """Probability that a message is held back until the next timer fires (stale later)."""
        self.held: list[Message] = []
        self.read_states: dict[NodeId, list[ReadState]] = {i: [] for i in self.ids}
        self.held_ready: dict[NodeId, Ready] = {}
        """Readys taken but not yet handled (``hold``/``release``)."""
        self.snapshots_installed: dict[NodeId, int] = {i: 0 for i in self.ids}
        """How many snapshots each node received from a leader and restored."""

    def _make(self, node_id: NodeId, applied: int = 0) -> RaftNode:
        rng = random.Random(f"{self.seed}/{node_id}/{len(getattr(self, 'delivered', []))}")
        return RaftNode(
            node_id,
            self.node_voters.get(node_id, self.bootstrap),
            self.storages[node_id],
            self.config,
            rng,
            now=self.now,
            applied=applied,
        )

    def __getitem__(self, node_id: NodeId) -> RaftNode:
        return self.nodes[node_id]

    # --- faults ----------------------------------------------------------------------------------

    def isolate(self, node_id: NodeId) -> None:
        """Cut every link to and from ``node_id``."""
        for other in self.ids:
            if other != node_id:
                self.cut |= {(node_id, other), (other, node_id)}

    def partition(self, *groups: Iterable[NodeId]) -> None:
        """Only nodes within the same group can talk."""
        sets = [set(g) for g in groups]
        for a in self.ids:
            for b in self.ids:
                if a != b and not any(a in s and b in s for s in sets):
                    self.cut.add((a, b))

    def heal(self) -> None:
        """Restore every link and remove the drop filter and the rewriter."""
        self.cut.clear()
        self.drop = None
        self.rewrite = None
        self.reorder = self.duplicate = self.delay = 0.0

    def crash(self, node_id: NodeId) -> None:
        """Stop a node; unpersisted state (a held Ready, see ``hold``) is lost."""
        self.down.add(node_id)
        self.held_ready.pop(node_id, None)

    def restart(self, node_id: NodeId) -> None:
        """Start a crashed node anew over its persisted storage, its state machine restored
        from its storage's snapshot (if any)."""
        self.down.discard(node_id)
        try:
            snap = self.storages[node_id].snapshot()
        except SnapshotUnavailableError:
            snap = None
        self.applied[node_id] = []
        applied = 0
        if snap is not None:
            self._restore(node_id, snap)
            applied = snap.meta.index
        self.nodes[node_id] = self._make(node_id, applied)

    def add_node(self, node_id: NodeId, voters: Sequence[NodeId] | None = None) -> RaftNode:
        """Start a new, empty node outside the group (a leader must add it), constructed with
        the net's bootstrap voters or with ``voters``."""
        if voters is not None:
            self.node_voters[node_id] = tuple(voters)
        self.ids = sorted([*self.ids, node_id])
        self.storages[node_id] = MemoryStorage()
        self.applied[node_id] = []
        self.read_states[node_id] = []
        self.snapshots_installed[node_id] = 0
        self.nodes[node_id] = self._make(node_id)
        return self.nodes[node_id]

    def compact(self, node_id: NodeId, keep: int = 0) -> Snapshot:
        """Snapshot ``node_id``'s state machine at its applied index and compact its log,
        keeping ``keep`` entries before that index."""
        self.flush(node_id)
        node = self.nodes[node_id]
        index = node.applied_index
        data = msgpack.packb(
            [[e.index, e.term, int(e.kind), e.data] for e in self.applied[node_id]],
            use_bin_type=True,
        )
        st = self.storages[node_id]
        snap = st.create_snapshot(index, node.conf_state, data)
        st.compact(max(index - keep, st.first_index() - 1))
        return snap

    # --- running ---------------------------------------------------------------------------------

    def live(self) -> list[NodeId]:
        return [i for i in self.ids if i not in self.down]

    def flush(self, only: NodeId | None = None) -> None:
        """Handle every node's (or ``only``'s) Ready: persist, send, apply, advance; check.
        A node whose Ready is held (``hold``) has none until it is released."""
        for i in [only] if only is not None else self.live():
            node = self.nodes[i]
            while node.has_ready():
                self._handle(i, node.ready())
            self._check_leader(node)

    def hold(self, node_id: NodeId) -> bool:
        """Take ``node_id``'s Ready but do not handle it yet (a slow disk): messages keep
        arriving while it is outstanding. False if it had nothing ready."""
        node = self.nodes[node_id]
        if node_id in self.held_ready or not node.has_ready():
            return False
        self.held_ready[node_id] = node.ready()
        return True

    def release(self, node_id: NodeId) -> None:
        """Handle the Ready held for ``node_id`` (if any), then whatever followed it."""
        rd = self.held_ready.pop(node_id, None)
        if rd is not None:
            self._handle(node_id, rd)
        self.flush(node_id)

    def _handle(self, i: NodeId, rd: Ready) -> None:
        node = self.nodes[i]
        st = self.storages[i]
        if rd.snapshot is not None:
            st.apply_snapshot(rd.snapshot)
        if rd.hard_state is not None:
            st.set_hard_state(rd.hard_state)
        st.append(rd.entries)
        self.queue.extend(rd.messages)
        self.events.extend((i, ev) for ev in rd.events)
        if rd.snapshot is not None:
            self._restore(i, rd.snapshot)
            self.snapshots_installed[i] += 1
        for e in rd.committed:
            self._check_apply(i, e)
        self.read_states[i].extend(rd.read_states)
        node.advance(rd)

    def deliver(self, max_messages: int = 200_000) -> None:
        """Deliver queued messages (and the ones they cause) until the network is quiet."""
        self.flush()
        n = 0
        while self.queue:
            n += 1
            if n > max_messages:
                raise AssertionError(f"message storm (seed {self.seed})")
            if self.reorder and self.chaos.random() < self.reorder:
                pos = self.chaos.randrange(len(self.queue))
                msg = self.queue[pos]
                del self.queue[pos]
            else:
                msg = self.queue.popleft()
            if self.delay and self.chaos.random() < self.delay:
                self.held.append(msg)
                continue
            if not self._reachable(msg):
                continue
            if self.drop is not None and self.drop(msg):
                continue
            if self.rewrite is not None:
                rewritten = self.rewrite(msg)
                if rewritten is None:
                    continue
                msg = rewritten
            if self.duplicate and self.chaos.random() < self.duplicate:
                self.queue.append(msg)
            self.delivered.append(msg)
            self.nodes[msg.dst].step(msg, self.now)
            self.flush(msg.dst)

    def deliver_one(self, pos: int) -> None:
        """Deliver only the queued message at ``pos`` (modulo the queue length), if it may go."""
        if not self.queue:
            return
        pos %= len(self.queue)
        msg = self.queue[pos]
        del self.queue[pos]
        if not self._reachable(msg):
            return
        self.delivered.append(msg)
        self.nodes[msg.dst].step(msg, self.now)
        self.flush(msg.dst)

    def _reachable(self, msg: Message) -> bool:
        """Can ``msg`` be delivered (both ends exist and are up, the link is not cut)?"""
        return (
            msg.dst in self.nodes
            and msg.dst not in self.down
            and msg.src not in self.down
            and (msg.src, msg.dst) not in self.cut
        )

    def tick_one(self, node_id: NodeId) -> None:
        """Tick one live node at the current time (whether or not a timer is due)."""
        if node_id not in self.down:
            self.nodes[node_id].tick(self.now)
            self.flush(node_id)

    def tick(self) -> None:
        """Release held messages, tick every live node whose deadline has come, deliver."""
        self.queue.extend(self.held)
        self.held.clear()
        for i in self.live():
            deadline = self.nodes[i].next_deadline()
            if deadline is not None and deadline <= self.now:
                self.nodes[i].tick(self.now)
        self.deliver()

    def advance(self, duration: Micros) -> None:
        """Let ``duration`` µs of virtual time pass, firing timers in order."""
        end = self.now + duration
        while True:
            nxt = self.next_deadline()
            if nxt is None or nxt > end:
                break
            self.now = max(self.now, nxt)
            self.tick()
        self.now = end
        self.tick()

    def next_deadline(self) -> Micros | None:
        ds = [self.nodes[i].next_deadline() for i in self.live()]
        ds2 = [d for d in ds if d is not None]
        return min(ds2) if ds2 else None

    def run_until(self, pred: Callable[[], bool], limit: Micros = 5_000_000) -> None:
        """Advance time from timer to timer until ``pred()`` holds; fail after ``limit`` µs."""
        end = self.now + limit
        self.deliver()
        while not pred():
            nxt = self.next_deadline()
            if nxt is None or nxt > end:
                raise AssertionError(f"condition not reached by t={end} µs (seed {self.seed})")
            self.now = max(self.now, nxt)
            self.tick()

    # --- conveniences ----------------------------------------------------------------------------

    def leader(self) -> NodeId | None:
        """The live leader with the highest term, if any."""
        best = None
        for i in self.live():
            n = self.nodes[i]
            if n.role is Role.LEADER and (best is None or n.term > self.nodes[best].term):
                best = i
        return best

    def wait_leader(self, limit: Micros = 5_000_000) -> NodeId:
        """Run until some live node leads and a majority of live nodes agree on it."""

        def settled() -> bool:
            lead = self.leader()
            if lead is None:
                return False
            agree = [i for i in self.live() if self.nodes[i].leader_id == lead]
            return len(agree) > len(self.ids) // 2

        self.run_until(settled, limit)
        lead = self.leader()
        assert lead is not None
        return lead

    def elect(self, node_id: NodeId) -> None:
        """Make ``node_id`` campaign now and deliver; it must win."""
        self.nodes[node_id].campaign(self.now)
        self.deliver()
        assert self.nodes[node_id].role is Role.LEADER, f"{node_id} lost (seed {self.seed})"

    def propose(self, node_id: NodeId, data: bytes) -> int:
        index = self.nodes[node_id].propose(data, self.now)
        self.deliver()
        return index

    def applied_data(self, node_id: NodeId) -> list[bytes]:
        """Data of the NORMAL entries ``node_id`` applied, in order."""
        return [e.data for e in self.applied[node_id] if e.kind is EntryKind.NORMAL]

    def log_terms(self, node_id: NodeId) -> list[int]:
        return [e.term for e in self.nodes[node_id].log_entries()]

    # --- safety checks ---------------------------------------------------------------------------

    def _restore(self, node_id: NodeId, snap: Snapshot) -> None:
        """Replace ``node_id``'s state machine by the snapshot's, checking every entry in it."""
        rows = msgpack.unpackb(snap.data, raw=False)
        self.applied[node_id] = []
        for index, term, kind, data in rows:
            self._check_apply(node_id, Entry(index, term, EntryKind(kind), data))
        got = self.applied[node_id][-1].index if self.applied[node_id] else 0
        if got != snap.meta.index:
            raise SafetyViolation(f"snapshot at {snap.meta.index} holds state up to {got}")

    def _check_apply(self, node_id: NodeId, e: Entry) -> None:
        seen = self.committed.setdefault(e.index, e)
        if e.index not in self.commit_term_bound:
            self.commit_term_bound[e.index] = max(
                max(n.term for n in self.nodes.values()),
                max(st.hard_state.term for st in self.storages.values()),
            )
        if seen != e:
            raise SafetyViolation(
                f"state machine safety: {node_id} applied {e} but {seen} was applied before "
                f"(seed {self.seed})"
            )
        applied = self.applied[node_id]
        if (applied[-1].index if applied else 0) + 1 != e.index:
            raise SafetyViolation(f"{node_id} applied {e.index} after {applied[-1].index}")
        applied.append(e)

    def _check_leader(self, node: RaftNode) -> None:
        if node.role is not Role.LEADER:
            return
        other = self.leaders.setdefault(node.term, node.id)
        if other != node.id:
            raise SafetyViolation(
                f"election safety: {other} and {node.id} both lead term {node.term} "
                f"(seed {self.seed})"
            )
        # Leader append-only (§5.3): while it leads, a leader never overwrites or deletes.
        key = (node.id, node.term)
        last = node.last_index
        if key not in self.leader_marks:
            self.leader_marks[key] = (last, node.term_at(last) or 0)
        index, term = self.leader_marks[key]
        if last < index or (index >= node.first_index and node.term_at(index) != term):
            raise SafetyViolation(
                f"leader append-only: {node.id} (term {node.term}) lost entry {index} "
                f"(seed {self.seed})"
            )

    def check_log_matching(self) -> None:
        """§5.3 log matching: same index and term ⇒ identical prefixes; leader completeness."""
        logs = {i: {e.index: e for e in self.nodes[i].log_entries()} for i in self.ids}
        first = {i: self.nodes[i].first_index for i in self.ids}
        for a in self.ids:
            for b in self.ids:
                if a >= b:
                    continue
                common = sorted(set(logs[a]) & set(logs[b]))
                for idx in reversed(common):
                    if logs[a][idx].term == logs[b][idx].term:
                        for j in range(max(first[a], first[b]), idx + 1):
                            if logs[a].get(j) != logs[b].get(j):
                                raise SafetyViolation(
                                    f"log matching: {a},{b} agree at {idx} but differ at {j} "
                                    f"(seed {self.seed})"
                                )
                        break
        for lead in self.live():
            if self.nodes[lead].role is not Role.LEADER:
                continue
            term = self.nodes[lead].term
            for idx, e in self.committed.items():
                if idx < first[lead]:
                    continue  # compacted into the leader's snapshot
                if term > self.commit_term_bound[idx] and logs[lead].get(idx) != e:
                    raise SafetyViolation(
                        f"leader completeness: {lead} leads term {term} but lacks {e}, "
                        f"committed by term {self.commit_term_bound[idx]} (seed {self.seed})"
                    )


def preload(terms: Sequence[int], hard_term: int | None = None) -> MemoryStorage:
    """A storage holding entries with the given terms at indices 1.., and that hard state term."""
    st = MemoryStorage(hard_state=HardState(term=hard_term or (terms[-1] if terms else 0)))
    st.append([Entry(i + 1, t, data=f"{i + 1}@{t}".encode()) for i, t in enumerate(terms)])
    return st


def cfg(**changes: object) -> RaftConfig:
    """``RaftConfig.local()`` with some fields changed."""
    base = RaftConfig.local()
    fields = {f: getattr(base, f) for f in base.__dataclass_fields__}
    fields.update(changes)
    return RaftConfig(**fields)  # type: ignore[arg-type]
