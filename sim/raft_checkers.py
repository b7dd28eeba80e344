"""Raft safety checkers, run on every step of a simulation (the Raft paper's Figure 3).

``RaftChecker`` is a ``sim.cluster.Observer``; it raises ``InvariantViolation`` the moment a
property breaks:

- **Election safety**: at most one leader per term (checked after every activation).
- **Durable vote**: a node's persisted term never decreases and, within a term, its persisted
  vote never changes once cast (what makes election safety survive crashes).
- **Log matching**: two logs holding an entry with the same index and term hold the same entry
  and agree on the term before it — and so, by induction, on the whole prefix. Checked on every
  persisted entry in O(1) against a global ``(index, term) -> (prev term, kind, data)`` map.
- **Leader completeness**: a leader's durable log holds every entry known committed (checked
  once per leader and term, when its log is fully persisted).
- **State machine safety**: no two nodes apply different entries at one index, and no node
  overwrites an entry it already knew committed (its durable commit index or what it applied)
  with a different one. (A node that lags may legitimately hold a stale entry at an index
  others have committed: it was not part of that majority.)
- **No acknowledged proposal lost**: an entry a client was told is committed is the entry
  applied at its index everywhere, and is in the final current leader's log (``finish``).

The checks read only what the driver sees (Readys, storage, public core properties), so they
hold any Raft core that follows ``consensus.raft``'s API.
"""

from __future__ import annotations

from typing import Any

from consensus.core import NodeId
from consensus.errors import CompactedError, UnavailableError
from consensus.messages import Entry, HardState
from consensus.raft import Ready, Role
from consensus.storage import MemoryStorage

from .adapter import SimNode
from .cluster import Cluster, Observer
from .errors import InvariantViolation


class RaftChecker(Observer):
    """The Raft safety properties listed in the module docstring."""

    def __init__(self) -> None:
        self.leaders: dict[int, NodeId] = {}
        self.by_index_term: dict[tuple[int, int], tuple[int, int, bytes, NodeId]] = {}
        self.committed: dict[int, Entry] = {}
        self.first_applier: dict[int, NodeId] = {}
        self.acked: dict[int, bytes] = {}
        self.hard: dict[NodeId, HardState] = {}
        self.completeness_checked: set[tuple[NodeId, int]] = set()
        self.checks = 0

    def _fail(self, cluster: Cluster, what: str) -> None:
        raise InvariantViolation(what, time_us=cluster.now)

    # ---- hooks ------------------------------------------------------------------------------

    def after_persist(self, cluster: Cluster, node: SimNode, ready: Any) -> None:
        rd: Ready = ready
        self.checks += 1
        if rd.entries:
            # What this node knew committed before this Ready: its durable commit index and
            # what it has applied since it booted. It must never overwrite those entries.
            prev = self.hard.get(node.id)
            app = node.app
            known = max(prev.commit if prev else 0, getattr(app, "applied_index", 0))
            self._check_entries(cluster, node, rd.entries, known)
        if rd.hard_state is not None:
            self._check_hard_state(cluster, node.id, rd.hard_state)

    def after_apply(self, cluster: Cluster, node: SimNode, ready: Any) -> None:
        rd: Ready = ready
        for e in rd.committed:
            known = self.committed.get(e.index)
            if known is None:
                self.committed[e.index] = e
                self.first_applier[e.index] = node.id
            elif known != e:
                self._fail(
                    cluster,
                    f"state machine safety: {node.id} applied {e!r} at index {e.index} but "
                    f"{self.first_applier[e.index]} applied {known!r}",
                )
            acked = self.acked.get(e.index)
            if acked is not None and acked != e.data:
                self._fail(
                    cluster,
                    f"acknowledged proposal lost: {acked!r} was acknowledged at index {e.index} "
                    f"but {node.id} applied {e!r}",
                )

    def after_activation(self, cluster: Cluster, node: SimNode) -> None:
        core = node.core
        if core is None or core.role is not Role.LEADER:
            return
        term = core.term
        holder = self.leaders.setdefault(term, node.id)
        if holder != node.id:
            self._fail(cluster, f"election safety: {holder} and {node.id} both leader in {term}")
        key = (node.id, term)
        if key not in self.completeness_checked and not node.persisting:
            self.completeness_checked.add(key)
            self._check_completeness(cluster, node, term)

    # ---- client acknowledgements ------------------------------------------------------------

    def acknowledge(self, cluster: Cluster, index: int, data: bytes) -> None:
        """A client was told its proposal ``data`` committed at ``index``."""
        known = self.committed.get(index)
        if known is None or known.data != data:
            self._fail(
                cluster, f"acknowledged {data!r} at {index} but the committed entry is {known!r}"
            )
        self.acked[index] = data

    def finish(self, cluster: Cluster) -> None:
        """End-of-run check: every acknowledged proposal is in the current leader's log.

        "Current" means a leader whose term is the highest any node has persisted: no leader
        of a later term can have existed, so every commit happened in its term or before. (A
        stale leader cut off in an older term may legitimately lack later commits.)
        """
        top = max((h.term for h in self.hard.values()), default=0)
        leaders = [
            n
            for n in cluster.nodes.values()
            if n.up and n.core.role is Role.LEADER and n.core.term >= top
        ]
        for node in leaders:
            if node.persisting:
                continue
            disk: MemoryStorage = node.disk
            for index in sorted(self.acked):
                got = _entry_at(disk, index)
                if got is not None and got.data != self.acked[index]:
                    self._fail(
                        cluster,
                        f"acknowledged proposal lost: leader {node.id} holds {got!r} at "
                        f"{index}, acknowledged {self.acked[index]!r}",
                    )
                if got is None and index >= disk.first_index():
                    self._fail(
                        cluster,
                        f"acknowledged proposal lost: leader {node.id} (term {node.core.term}) "
                        f"has no entry at acknowledged index {index}",
                    )

    # ---- the properties ---------------------------------------------------------------------

    def _check_hard_state(self, cluster: Cluster, nid: NodeId, hs: HardState) -> None:
        old = self.hard.get(nid)
        if old is not None:
            if hs.term < old.term:
                self._fail(cluster, f"{nid} persisted term {hs.term} after {old.term}")
            if hs.term == old.term and old.vote is not None and hs.vote != old.vote:
                self._fail(
                    cluster,
                    f"{nid} changed its vote in term {hs.term} from {old.vote} to {hs.vote}",
                )
        self.hard[nid] = hs

    def _check_entries(
        self, cluster: Cluster, node: SimNode, entries: list[Entry], known_committed: int
    ) -> None:
        disk: MemoryStorage = node.disk
        table = self.by_index_term
        committed = self.committed
        for e in entries:
            try:
                prev_term = disk.term(e.index - 1)
            except (CompactedError, UnavailableError):
                continue
            val = (prev_term, int(e.kind), e.data, node.id)
            seen = table.setdefault((e.index, e.term), val)
            if seen[:3] != val[:3]:
                self._fail(
                    cluster,
                    f"log matching: at (index {e.index}, term {e.term}) {node.id} holds "
                    f"prev term {prev_term}, kind {e.kind}, data {e.data!r} but {seen[3]} "
                    f"holds prev term {seen[0]}, kind {seen[1]}, data {seen[2]!r}",
                )
            if e.index > known_committed:
                continue  # a lagging node may hold a stale entry where others committed
            c = committed.get(e.index)
            if c is not None and c != e:
                self._fail(
                    cluster,
                    f"committed entry overwritten: {node.id}, which knew index "
                    f"{known_committed} committed, persisted {e!r} over committed {c!r} "
                    f"(applied first by {self.first_applier[e.index]})",
                )

    def _check_completeness(self, cluster: Cluster, node: SimNode, term: int) -> None:
        disk: MemoryStorage = node.disk
        for index in sorted(self.committed):
            want = self.committed[index]
            got = _entry_at(disk, index)
            if got is None and index < disk.first_index():
                continue  # compacted into a snapshot
            if got != want:
                self._fail(
                    cluster,
                    f"leader completeness: {node.id} leads term {term} without committed "
                    f"{want!r} (holds {got!r})",
                )


def _entry_at(disk: MemoryStorage, index: int) -> Entry | None:
    if index < disk.first_index() or index > disk.last_index():
        return None
    return disk.entries(index, index + 1)[0]
