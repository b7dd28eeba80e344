"""Simulated Raft clients: propose unique commands during the run and wait for them to apply.

Each client loops: think (exponential ``interval_ms``), propose to the node it believes is
leader (a random running node at first or after a failure), follow ``NotLeader`` hints, and wait
until the proposing node applies its index. The request is then:

- **acknowledged** if the applied entry is its own command — reported to the checker, which from
  then on demands that this entry stays at this index forever;
- **failed** if another entry was applied at that index (the leader lost its term) — retried;
- **abandoned** (outcome unknown) when its node crashes or ``timeout_ms`` passes.

Every command is unique (``c<client>:<seq>``), so a lost or duplicated acknowledgement shows.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from consensus.core import Micros, NodeId
from consensus.errors import NotLeader
from consensus.raft import Ready

from .adapter import SimNode
from .cluster import Cluster, Observer, ms
from .raft_checkers import RaftChecker
from .scenario import ClientSpec

RETRY_MS = 20.0
"""Pause before retrying after NotLeader, a failed request or no running node."""


@dataclass(slots=True)
class Request:
    client: int
    node: NodeId
    index: int
    data: bytes
    issued: Micros


@dataclass(slots=True)
class Client:
    num: int
    seq: int = 0
    hint: NodeId | None = None
    pending: Request | None = None


class RaftClients(Observer):
    """A population of clients; see the module docstring."""

    def __init__(
        self,
        cluster: Cluster,
        spec: ClientSpec,
        rng: random.Random,
        checker: RaftChecker | None,
    ) -> None:
        self.cluster = cluster
        self.spec = spec
        self.rng = rng
        self.checker = checker
        self.clients = [Client(i) for i in range(spec.clients)]
        self._waiting: dict[tuple[NodeId, int], Request] = {}
        self.active = False
        self.proposed = 0
        self.acked = 0
        self.failed = 0
        self.abandoned = 0
        self.not_leader = 0
        self.latencies_us: list[int] = []
        self.progress_since: Micros | None = None
        self.progress_at: Micros | None = None
        self.progress_index = 0

    def start(self) -> None:
        """Start every client's loop from now."""
        self.active = True
        for c in self.clients:
            self._think(c)

    def stop(self) -> None:
        """Stop issuing new requests (pending ones still resolve)."""
        self.active = False

    def watch_progress(self, since: Micros) -> None:
        """Record the first acknowledgement of a request issued at or after ``since``."""
        self.progress_since = since
        self.progress_at = None
        self.progress_index = 0

    # ---- the loop ---------------------------------------------------------------------------

    def _think(self, c: Client, mean_ms: float | None = None) -> None:
        mean = mean_ms if mean_ms is not None else self.spec.interval_ms
        self.cluster.kernel.after(ms(self.rng.expovariate(1.0 / mean)), self._request, c)

    def _request(self, c: Client) -> None:
        if not self.active or c.pending is not None:
            return
        cluster = self.cluster
        up = cluster.up_ids()
        if not up:
            self._think(c, RETRY_MS)
            return
        target = c.hint if c.hint in up else self.rng.choice(up)
        c.seq += 1
        data = f"c{c.num}:{c.seq}".encode()
        try:
            index = cluster.call(target, lambda core, now: core.propose(data, now))
        except NotLeader as e:
            self.not_leader += 1
            c.hint = e.leader_hint if e.leader_hint != target else None
            self._think(c, RETRY_MS)
            return
        self.proposed += 1
        cluster.trace.record(cluster.now, "propose", target, index, data)
        c.hint = target
        req = Request(c.num, target, index, data, cluster.now)
        c.pending = req
        self._waiting[(target, index)] = req
        cluster.kernel.after(ms(self.spec.timeout_ms), self._timeout, c, req)

    def _resolve(self, req: Request) -> None:
        c = self.clients[req.client]
        self._waiting.pop((req.node, req.index), None)
        if c.pending is req:
            c.pending = None
            self._think(c)

    def _timeout(self, c: Client, req: Request) -> None:
        if c.pending is req:
            self.abandoned += 1
            c.hint = None
            self._resolve(req)

    # ---- observer hooks ---------------------------------------------------------------------

    def after_apply(self, cluster: Cluster, node: SimNode, ready: Any) -> None:
        if not self._waiting:
            return
        rd: Ready = ready
        for e in rd.committed:
            req = self._waiting.get((node.id, e.index))
            if req is None:
                continue
            if e.data == req.data:
                self.acked += 1
                self.latencies_us.append(cluster.now - req.issued)
                if self.checker is not None:
                    self.checker.acknowledge(cluster, e.index, e.data)
                since = self.progress_since
                if since is not None and self.progress_at is None and req.issued >= since:
                    self.progress_at = cluster.now
                    self.progress_index = e.index
            else:
                self.failed += 1
                self.clients[req.client].hint = None
            self._resolve(req)

    def on_crash(self, cluster: Cluster, node: SimNode) -> None:
        for key in sorted(k for k in self._waiting if k[0] == node.id):
            req = self._waiting[key]
            self.abandoned += 1
            self.clients[req.client].hint = None
            self._resolve(req)
