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
- **batched writes** (``batch_ms`` > 0): a write is checked against the node at once (a
  non-leader refuses it, as the driver's ``check_writable`` does), then held with the other
  writes aimed at that node for up to ``batch_ms`` and proposed with them, grouped by the
  driver's rules (``sim.kv_batch``). Every write of a group shares its entry's Raft index (the
  mod revision it creates); when the proposer applies that index with the group's own entry,
  member ``i`` gets ``Batched.results[i]``; another entry there → every member was lost. A
  held write whose node crashes before proposing it had no effect (not recorded); one that
  times out, or whose node crashes after proposing it, is unknown as above. A group still
  waiting at an index its node proposes again (it lost leadership, its log was cut back and
  it leads again) was lost: that index can no longer commit it.
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
from consensus.kv import Batched, Cas, CasFailed, Delete, Ok, Put
from consensus.kv_batch import entry_data, group_commands
from consensus.kv_types import KvCommand, encode_command
from consensus.raft import RaftNode, ReadIndexFailed, Ready, Role

from .adapter import SimNode
from .cluster import Cluster, Observer, ms
from .errors import InvariantViolation
from .kv_adapter import KvApp
from .kv_batch import BatchStats
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
    batch_ms: float = 0.0
    """0: each write is proposed at once, as its own entry. Above 0: the writes aimed at one
    node are held up to this long (virtual ms) and proposed together, grouped into ``Batch``
    entries by the node driver's rules (``sim.kv_batch``)."""


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
    entry: bytes = b""
    """A write's entry data once proposed: ``payload`` itself, or the ``Batch`` holding it."""
    command: KvCommand | None = None
    """A held write's command (``batch_ms`` > 0), for grouping."""


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
        self._writes: dict[tuple[NodeId, int], list[Pending]] = {}
        """(proposer, index) -> the writes proposed in that entry, in their order."""
        self._held: dict[NodeId, list[Pending]] = {}
        """Writes held for batching, by the node they are aimed at (``batch_ms`` > 0)."""
        self.batch_stats = BatchStats()
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
        cmd: KvCommand
        if kind == "put":
            cmd = Put(key, value)
        elif kind == "delete":
            value = None
            cmd = Delete(key)
        else:
            if self.rng.random() < self.spec.random_cas:
                expected = self.rng.randint(0, max(1, self.known_mod.get(key, 0) + 2))
            else:
                expected = self.known_mod.get(key, 0)
            cmd = Cas(key, expected, value)
        data = encode_command(cmd)
        if self.spec.batch_ms > 0:
            now = self.cluster.now
            self._hold(c, Pending(c.num, kind, key, target, now, value, expected, None, data,
                                  command=cmd))  # fmt: skip
            return
        self._capture = []
        try:
            index = self.cluster.call(target, lambda core, now: core.propose(data, now))
        except NotLeader as e:
            self._refused(c, target, e)
            return
        finally:
            captured, self._capture = self._capture, None
        self.stats.issued[kind] += 1
        c.hint = target
        p = Pending(c.num, kind, key, target, self.cluster.now, value, expected, index, data)
        p.entry = data
        c.pending = p
        self._writes[(target, index)] = [p]
        self.cluster.kernel.after(ms(self.spec.timeout_ms), self._timeout, c, p)
        for nid, e, res in captured:  # applied within the call itself (a single-voter group)
            if nid == target and e.index == index:
                self._writes.pop((target, index), None)
                if e.data == data:
                    self._complete_write(self.cluster, p, index, res)

    def _refused(self, c: Client, target: NodeId, e: NotLeader) -> None:
        """``target`` refused ``c``'s write (no effect, not recorded): follow its hint, retry."""
        self.stats.not_leader += 1
        c.hint = e.leader_hint if e.leader_hint != target else None
        self._think(c, RETRY_MS)

    # ---- batched writes (batch_ms > 0) ------------------------------------------------------

    def _hold(self, c: Client, p: Pending) -> None:
        """Hold ``p`` for its node's next flush, unless the node refuses writes now."""
        target = p.node
        try:
            self.cluster.nodes[target].core.check_writable()
        except NotLeader as e:
            self._refused(c, target, e)
            return
        c.hint = target
        c.pending = p
        held = self._held.get(target)
        if held is None:
            held = self._held[target] = []
            self.cluster.kernel.after(ms(self.spec.batch_ms), self._flush, target, held)
        held.append(p)
        self.cluster.kernel.after(ms(self.spec.timeout_ms), self._timeout, c, p)

    def _flush(self, target: NodeId, held: list[Pending]) -> None:
        """Propose the writes held for ``target`` (those still pending), group by group."""
        if self._held.get(target) is not held:
            return  # the node crashed meanwhile: on_crash dropped these
        del self._held[target]
        live = [p for p in held if self._is_pending(p)]
        commands = [(p.command, p.payload) for p in live if p.command is not None]
        for positions in group_commands(commands):
            self._propose_group(target, [live[i] for i in positions])

    def _propose_group(self, target: NodeId, group: list[Pending]) -> None:
        """Propose ``group`` as one entry on ``target`` and wait for its index to apply."""
        data = entry_data([p.payload for p in group])
        self._capture = []
        try:
            index = self.cluster.call(target, lambda core, now: core.propose(data, now))
        except NotLeader as e:
            for p in group:  # never in the log
                self.clients[p.client].pending = None
                self._refused(self.clients[p.client], target, e)
            return
        finally:
            captured, self._capture = self._capture, None
        self.batch_stats.proposed(len(group))
        for p in group:
            self.stats.issued[p.kind] += 1
            p.index, p.entry = index, data
        for p in self._writes.get((target, index), ()):  # an older term's entry, cut back
            self._lose(p)
        self._writes[(target, index)] = group
        for nid, e, res in captured:  # applied within the call itself (a single-voter group)
            if nid == target and e.index == index:
                self._settle(self.cluster, target, e.index, e.data, res)

    def _is_pending(self, p: Pending) -> bool:
        return self.clients[p.client].pending is p

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
        key = (p.node, p.index or 0)
        group = self._writes.get(key)
        if group is not None and (
            len(group) == 1 or all(q is p or not self._is_pending(q) for q in group)
        ):
            del self._writes[key]
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
                self._settle(cluster, node.id, e.index, e.data, res)
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

    def _settle(self, cluster: Cluster, nid: NodeId, index: int, data: bytes, res: Any) -> None:
        """``nid`` applied ``data`` at ``index`` with result ``res``: settle the writes it
        proposed at that index (if any)."""
        group = self._writes.pop((nid, index), None)
        if group is None:
            return
        if data != group[0].entry:
            for p in group:  # another entry won this index: no effect
                self._lose(p)
            return
        if len(group) == 1:
            if self._is_pending(group[0]):
                self._complete_write(cluster, group[0], index, res)
            return
        if not isinstance(res, Batched) or len(res.results) != len(group):
            raise InvariantViolation(
                f"{nid} applied its batch of {len(group)} writes at {index} (built by the "
                f"driver's rules) as {res!r}",
                time_us=cluster.now,
            )
        self.batch_stats.batches_applied += 1
        for p, result in zip(group, res.results, strict=True):
            if self._is_pending(p):
                self._complete_write(cluster, p, index, result)

    def _lose(self, p: Pending) -> None:
        """``p`` can no longer take effect: it ends without an entry in the history."""
        if self._is_pending(p):
            self.stats.lost += 1
            self.clients[p.client].hint = None
            self._done(p)

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
                self.checker.acknowledge(cluster, index, p.entry)
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
        for p in self._held.pop(node.id, ()):  # never proposed: no effect, not recorded
            if self._is_pending(p):
                self.batch_stats.dropped += 1
                self.clients[p.client].hint = None
                self._done(p)
        gone = [p for (nid, _), group in self._writes.items() if nid == node.id for p in group]
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
