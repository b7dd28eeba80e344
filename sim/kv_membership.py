"""Membership changes and leadership transfers during a simulated run.

``MembershipDriver`` acts as an operator (or the autopilot of DESIGN §3) would: every
``change_every_ms`` (exponential) it asks the current leader for one single-server change,
chosen at random among those that make sense for the leader's membership:

- add a spare node (one that has never been a member) as a learner, while the group has fewer
  than ``max_voters`` voters;
- promote a learner (the leader refuses while the learner lags: ``ConfChangeError``);
- remove a voter — the leader itself included — while more than ``min_voters`` remain;
- remove a learner (rarely).

With probability ``transfer`` it also hands leadership to another voter. Removed nodes are never
added back (they keep running, outside the group, and clients may still read their stale
state). Refusals (``NotLeader``, ``ConfChangeError``, a transfer under way) are counted, not
errors: the leader is entitled to refuse.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from consensus.core import NodeId
from consensus.errors import ConfChangeError, LocalProtocolError, NotLeader
from consensus.messages import ConfChange, ConfChangeType

from .cluster import Cluster, ms
from .kv_clients import leader_of

_T = ConfChangeType


@dataclass(frozen=True, slots=True)
class MembershipSpec:
    """How often and within which bounds the membership changes."""

    change_every_ms: float = 600.0
    min_voters: int = 3
    max_voters: int = 5
    transfer: float = 0.15
    """Probability, at each change, of also transferring leadership."""
    remove_learner: float = 0.1
    """Weight of removing a learner relative to the other options (1 each)."""

    def __post_init__(self) -> None:
        if not 1 <= self.min_voters <= self.max_voters:
            raise ValueError("MembershipSpec needs 1 <= min_voters <= max_voters")
        if self.change_every_ms <= 0:
            raise ValueError("MembershipSpec.change_every_ms must be > 0")


@dataclass(slots=True)
class MembershipStats:
    proposed: dict[str, int] = field(default_factory=dict)
    refused: int = 0
    transfers: int = 0


class MembershipDriver:
    """Proposes membership changes to the leader until ``stop()``; see the module docstring."""

    def __init__(
        self, cluster: Cluster, spec: MembershipSpec, rng: random.Random, spares: list[NodeId]
    ) -> None:
        self.cluster = cluster
        self.spec = spec
        self.rng = rng
        self.spares = sorted(spares)
        self.active = False
        self.stats = MembershipStats()

    def start(self) -> None:
        self.active = True
        self._schedule()

    def stop(self) -> None:
        self.active = False

    def _schedule(self) -> None:
        delay = ms(self.rng.expovariate(1.0 / self.spec.change_every_ms))
        self.cluster.kernel.after(delay, self._step)

    def _options(self, voters: tuple[NodeId, ...], learners: tuple[NodeId, ...]) -> list:
        spec = self.spec
        options: list[tuple[float, ConfChange]] = []
        if self.spares and len(voters) + len(learners) < spec.max_voters:
            options.append((1.0, ConfChange(_T.ADD_LEARNER, self.spares[0])))
        if len(voters) < spec.max_voters:
            options += [(1.0, ConfChange(_T.PROMOTE_LEARNER, n)) for n in learners]
        if len(voters) > spec.min_voters:
            options += [(1.0 / len(voters), ConfChange(_T.REMOVE_VOTER, v)) for v in voters]
        options += [(spec.remove_learner, ConfChange(_T.REMOVE_LEARNER, n)) for n in learners]
        return options

    def _step(self) -> None:
        if not self.active:
            return
        self._schedule()
        leader = leader_of(self.cluster)
        if leader is None:
            return
        core = leader.core
        options = self._options(core.voters, core.learners)
        if options:
            weights = [w for w, _ in options]
            change = self.rng.choices([c for _, c in options], weights=weights)[0]
            try:
                self.cluster.call(leader.id, lambda c, now: c.propose_conf_change(change, now))
            except (NotLeader, ConfChangeError):
                self.stats.refused += 1
            else:
                name = change.type.name.lower()
                self.stats.proposed[name] = self.stats.proposed.get(name, 0) + 1
                if change.type is _T.ADD_LEARNER:
                    self.spares.remove(change.node)
                self.cluster.trace.record(self.cluster.now, "conf", change.type.name, change.node)
        if self.rng.random() < self.spec.transfer and leader.up:
            others = [v for v in leader.core.voters if v != leader.id]
            if others:
                to = self.rng.choice(others)
                try:
                    self.cluster.call(leader.id, lambda c, now: c.transfer_leadership(to, now))
                except (NotLeader, LocalProtocolError):
                    self.stats.refused += 1
                else:
                    self.stats.transfers += 1
