"""Simulated KV clients: they write and read the replicated KV during faults and record the
history the linearizability checker (``sim.linearizability``) judges at the end of a seed.

Each client loops: think (exponential ``interval_ms``), then one operation on one of ``keys``
keys, chosen by ``weights``:

- **put / delete / cas** — encoded with ``consensus.kv_types`` and proposed to the node the
  client believes leads (a random running node at first or after a failure; ``NotLeader`` hints
  are followed, a refused proposal has no effect and is not recorded). The proposal's Raft
  index is the mod revision the write creates if it takes effect. When the proposing node
  applies that index the client learns the outcome: its own entry → done, with the store's
  result (``Ok`` / ``CasFailed``); another entry → the proposal was lost (no effect, not
  recorded). If the node crashes, or ``timeout_ms`` passes, the outcome is **unknown**.
  CAS expects the last mod revision any client saw for the key (or a random one).
- **get** (linearizable) — ``RaftNode.read_index`` on a random node (a follower forwards to
  its leader); served from that node's store once it has applied the ``ReadState``'s index,
  with the store's applied index as the read's revision. ``ReadIndexFailed`` = no effect.
- **stale_get / range** — read a random running node's local store at once (any node,
  members, learners and removed nodes alike): checked against the state at its revision.

Every value written is unique (``c<client>:<seq>``). Times are virtual µs.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from consensus.core import Micros, NodeId
from consensus.errors import NotLeader
from consensus.kv import Cas, CasFailed, Delete, Ok, Put
from consensus.kv_types import encode_command
from consensus.raft import RaftNode, ReadIndexFailed, Ready, Role

from .adapter import SimNode
from .cluster import Cluster, Observer, ms
from .kv_adapter import KvApp
from .linearizability import Operation
from .raft_checkers import RaftChecker

RETRY_MS = 20.0
"""Pause before retrying after NotLeader, a failed read or no running node."""
KINDS = ("put", "cas", "delete", "get", "stale_get", "range")


@dataclass(frozen=True, slots=True)
class KvClientSpec:
    """The client population of a KV scenario."""

    clients: int = 4
    keys: int = 3
    interval_ms: float = 25.0
    """Mean think time between a client's operations (exponential)."""
    timeout_ms: float = 500.0
    """An operation without an outcome by then has an unknown outcome."""
    weights: tuple[int, int, int, int, int, int] = (4, 3, 1, 4, 1, 1)
    """Relative frequency of put, cas, delete, get, stale_get, range."""
    random_cas: float = 0.2
    """Fraction of CAS that expect a random mod revision (most then fail)."""


@dataclass(slots=True)
class Pending:
    client: int
    kind: str
    key: str
    node: NodeId
    call: Micros
    value: bytes | None = None
    expected: int = 0
    index: int | None = None
    payload: bytes = b""
    """A write's encoded command; a linearizable read's ReadIndex context."""
    read_index: int | None = None


@dataclass(slots=True)
class Client:
    num: int
    seq: int = 0
    hint: NodeId | None = None
    pending: Pending | None = None


@dataclass(slots=True)
class ClientStats:
    """Counters over a run."""

    issued: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    completed: int = 0
    unknown: int = 0
    lost: int = 0
    not_leader: int = 0
    read_failed: int = 0
    write_latency_us: list[int] = field(default_factory=list)
    read_latency_us: list[int] = field(default_factory=list)
    read_samples: list[tuple[NodeId, int]] = field(default_factory=list)
    """(serving node, latency µs) of each linearizable read."""


class KvClients(Observer):
    """A population of KV clients recording a history; see the module docstring."""

    def __init__(
        self,
        cluster: Cluster,
        spec: KvClientSpec,
        rng: random.Random,
        checker: RaftChecker | None = None,
    ) -> None:
        self.cluster = cluster
        self.spec = spec
        self.rng = rng
        self.checker = checker
        self.keys = [f"k{i}" for i in range(spec.keys)]
        self.clients = [Client(i) for i in range(spec.clients)]
        self.history: list[Operation] = []
        self.stats = ClientStats()
        self.active = False
        self.known_mod: dict[str, int] = {}
        self._writes: dict[tuple[NodeId, int], Pending] = {}
        self._reads: dict[tuple[NodeId, bytes], Pending] = {}
        self._ctx = 0
        self._capture: list[tuple[NodeId, Any, Any]] | None = None
        self.progress_since: Micros | None = None
        self.progress_index: int | None = None

    # ---- control ----------------------------------------------------------------------------

    def start(self) -> None:
        self.active = True
        for c in self.clients:
            self._think(c)

    def stop(self) -> None:
        """Issue no new operations (pending ones still complete or time out)."""
        self.active = False

    def pending(self) -> int:
        return sum(1 for c in self.clients if c.pending is not None)

    def finish(self) -> list[Operation]:
        """Record every operation still pending as unknown; returns the history."""
        for c in self.clients:
            if c.pending is not None:
                self._unknown(c.pending)
        return self.history

    def watch_progress(self, since: Micros) -> None:
        """Remember the index of the first write issued at or after ``since`` that completes."""
        self.progress_since = since
        self.progress_index = None

    # ---- issuing ----------------------------------------------------------------------------

    def _think(self, c: Client, mean_ms: float | None = None) -> None:
        mean = mean_ms if mean_ms is not None else self.spec.interval_ms
        self.cluster.kernel.after(ms(self.rng.expovariate(1.0 / mean)), self._issue, c)

    def _issue(self, c: Client) -> None:
        if not self.active or c.pending is not None:
            return
        up = self.cluster.up_ids()
        if not up:
            self._think(c, RETRY_MS)
            return
        kind = self.rng.choices(KINDS, weights=self.spec.weights)[0]
        key = self.rng.choice(self.keys)
        if kind in ("stale_get", "range"):
            self._local_read(c, kind, key, self.rng.choice(up))
        elif kind == "get":
            self._linear_read(c, key, self.rng.choice(up))
        else:
            target = c.hint if c.hint in up else self.rng.choice(up)
            self._write(c, kind, key, target)

    def _write(self, c: Client, kind: str, key: str, target: NodeId) -> None:
        c.seq += 1
        value = f"c{c.num}:{c.seq}".encode()
        expected = 0
        if kind == "put":
            data = encode_command(Put(key, value))
        elif kind == "delete":
            value = None
            data = encode_command(Delete(key))
        else:
            if self.rng.random() < self.spec.random_cas:
                expected = self.rng.randint(0, max(1, self.known_mod.get(key, 0) + 2))
            else:
                expected = self.known_mod.get(key, 0)
            data = encode_command(Cas(key, expected, value))
        self._capture = []
        try:
            index = self.cluster.call(target, lambda core, now: core.propose(data, now))
        except NotLeader as e:
            self.stats.not_leader += 1
            c.hint = e.leader_hint if e.leader_hint != target else None
            self._think(c, RETRY_MS)
            return
        finally:
            captured, self._capture = self._capture, None
        self.stats.issued[kind] += 1
        c.hint = target
        p = Pending(c.num, kind, key, target, self.cluster.now, value, expected, index, data)
        c.pending = p
        self._writes[(target, index)] = p
        self.cluster.kernel.after(ms(self.spec.timeout_ms), self._timeout, c, p)
        for nid, e, res in captured:  # applied within the call itself (a single-voter group)
            if nid == target and e.index == index:
                self._writes.pop((target, index), None)
                if e.data == data:
                    self._complete_write(self.cluster, p, index, res)

    def _linear_read(self, c: Client, key: str, target: NodeId) -> None:
        self._ctx += 1
        ctx = b"r%d" % self._ctx
        p = Pending(c.num, "get", key, target, self.cluster.now, payload=ctx)
        c.pending = p
        self._reads[(target, ctx)] = p
        try:
            self.cluster.call(target, lambda core, now: core.read_index(ctx, now))
        except NotLeader:
            self.stats.not_leader += 1
            del self._reads[(target, ctx)]
            c.pending = None
            self._think(c, RETRY_MS)
            return
        self.stats.issued["get"] += 1
        if c.pending is p:
            self.cluster.kernel.after(ms(self.spec.timeout_ms), self._timeout, c, p)

    def _local_read(self, c: Client, kind: str, key: str, target: NodeId) -> None:
        self.stats.issued[kind] += 1
        app: KvApp = self.cluster.nodes[target].app
        store = app.store
        now = self.cluster.now
        op_id, rev = len(self.history), store.applied_index
        if kind == "stale_get":
            kv = store.get(key)
            result = (kv.value, kv.mod_revision) if kv else (None, 0)
            op = Operation(op_id, c.num, kind, key, now, now, result=result, revision=rev)
        else:
            items = tuple((x.key, x.value, x.mod_revision) for x in store.range("k"))
            op = Operation(op_id, c.num, kind, "k", now, now, items=items, revision=rev)
        self.history.append(op)
        self.stats.completed += 1
        self._think(c)

    # ---- completion -------------------------------------------------------------------------

    def _done(self, p: Pending) -> None:
        c = self.clients[p.client]
        if c.pending is p:
            c.pending = None
            self._think(c)

    def _record(self, p: Pending, ret: Micros | None, **outcome: Any) -> None:
        op = Operation(
            len(self.history),
            p.client,
            p.kind,
            p.key,
            p.call,
            ret,
            value=p.value,
            expected=p.expected,
            index=p.index,
            **outcome,
        )
        self.history.append(op)

    def _unknown(self, p: Pending) -> None:
        self._writes.pop((p.node, p.index or 0), None)
        self._reads.pop((p.node, p.payload), None)
        self.stats.unknown += 1
        self.clients[p.client].hint = None
        self._record(p, None)
        self._done(p)

    def _timeout(self, c: Client, p: Pending) -> None:
        if c.pending is p:
            self._unknown(p)

    def _serve_ready_reads(self, node: SimNode) -> None:
        app: KvApp = node.app
        ready = [
            p
            for (nid, _), p in self._reads.items()
            if nid == node.id and p.read_index is not None and app.applied_index >= p.read_index
        ]
        for p in ready:
            del self._reads[(p.node, p.payload)]
            kv = app.store.get(p.key)
            result = (kv.value, kv.mod_revision) if kv else (None, 0)
            now = self.cluster.now
            self._record(p, now, result=result, revision=app.applied_index)
            if kv is not None:
                self.known_mod[p.key] = max(self.known_mod.get(p.key, 0), kv.mod_revision)
            self.stats.completed += 1
            self.stats.read_latency_us.append(now - p.call)
            self.stats.read_samples.append((p.node, now - p.call))
            self._done(p)

    # ---- observer hooks ---------------------------------------------------------------------

    def after_apply(self, cluster: Cluster, node: SimNode, ready: Any) -> None:
        rd: Ready = ready
        app: KvApp = node.app
        if self._capture is not None:
            self._capture.extend((node.id, e, res) for e, res in app.last_applied)
        if self._writes:
            for e, res in app.last_applied:
                p = self._writes.pop((node.id, e.index), None)
                if p is None:
                    continue
                if e.data != p.payload:
                    self.stats.lost += 1  # another entry won this index: no effect
                    self.clients[p.client].hint = None
                    self._done(p)
                    continue
                self._complete_write(cluster, p, e.index, res)
        for ev in rd.events:
            if isinstance(ev, ReadIndexFailed):
                p = self._reads.pop((node.id, ev.context), None)
                if p is not None:
                    self.stats.read_failed += 1
                    self._done(p)
        for rs in rd.read_states:
            p = self._reads.get((node.id, rs.context))
            if p is not None:
                p.read_index = rs.index
        if self._reads:
            self._serve_ready_reads(node)

    def _complete_write(self, cluster: Cluster, p: Pending, index: int, res: Any) -> None:
        now = cluster.now
        if isinstance(res, CasFailed):
            self._record(p, now, ok=False, current=res.current)
            self.known_mod[p.key] = max(self.known_mod.get(p.key, 0), res.current)
        elif isinstance(res, Ok):
            self._record(p, now, ok=True)
            if p.kind != "delete":
                self.known_mod[p.key] = max(self.known_mod.get(p.key, 0), index)
            if self.checker is not None:
                self.checker.acknowledge(cluster, index, p.payload)
            if (
                self.progress_since is not None
                and self.progress_index is None
                and p.call >= self.progress_since
            ):
                self.progress_index = index
        else:
            self._record(p, now, ok=False)  # Rejected: cannot happen with valid commands
        self.stats.completed += 1
        self.stats.write_latency_us.append(now - p.call)
        self._done(p)

    def on_crash(self, cluster: Cluster, node: SimNode) -> None:
        gone = [p for (nid, _), p in self._writes.items() if nid == node.id]
        gone += [p for (nid, _), p in self._reads.items() if nid == node.id]
        for p in gone:
            if self.clients[p.client].pending is p:
                self._unknown(p)


def leader_of(cluster: Cluster) -> SimNode | None:
    """The running leader of the highest term, if any."""
    best: SimNode | None = None
    for i in cluster.up_ids():
        n = cluster.nodes[i]
        core: RaftNode = n.core
        if core.role is Role.LEADER and (best is None or core.term > best.core.term):
            best = n
    return best
