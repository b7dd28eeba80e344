"""Automatic voters (like Consul's autopilot), decided by the leader from the SWIM view.

``decide`` is pure: given the membership, the members' liveness/capability and how long each
unhealthy member has been so, it returns at most one membership change to propose now (Raft
takes one change at a time). Its rules, in priority order:

1. a voter or learner that LEFT gracefully, or has been suspect/dead/absent for at least
   ``stabilization_s``, is removed (never the last voter; never the leader itself);
2. while fewer voters than the target (5 when 5+ healthy members and ``max_voters`` is 5,
   else 3 when 3+, else 1; a voter still inside its stabilization period counts), the best
   caught-up learner is promoted;
3. while fewer learners than ``max_learners`` (plus the voter slots still to fill), the best
   alive non-member is added as a learner.

"Best" = highest tier (heavy > standard > light), then longest alive, then node id (a total,
deterministic order). Every other member follows the KV through a watch stream.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from consensus.errors import ConfChangeError, NotLeader
from consensus.messages import ConfChange, ConfChangeType, ConfState
from consensus.raft_types import Role
from moltmesh.logs import log_event
from moltmesh.raft.driver import OutcomeUnknown, RaftDriver, Unavailable
from moltmesh.raft.tasks import cancel_and_wait

log = logging.getLogger("moltmesh.raft.autopilot")

_TIER_RANK = {"heavy": 2, "standard": 1, "light": 0}


@dataclass(frozen=True, slots=True)
class MemberHealth:
    """One mesh member as the autopilot sees it."""

    node: str
    status: str  # alive | suspect | dead | left
    tier: str
    age_s: float  # how long it has been in its current status


def _rank(m: MemberHealth) -> tuple[int, float, str]:
    return (-_TIER_RANK.get(m.tier, 0), -m.age_s, m.node)


def target_voters(healthy: int, max_voters: int) -> int:
    if healthy >= 5 and max_voters >= 5:
        return 5
    if healthy >= 3 and max_voters >= 3:
        return 3
    return 1


def decide(
    leader: str,
    conf: ConfState,
    members: Mapping[str, MemberHealth],
    unhealthy_for: Mapping[str, float],
    caught_up: Callable[[str], bool],
    *,
    max_voters: int = 5,
    max_learners: int = 4,
    stabilization_s: float = 10.0,
) -> ConfChange | None:
    """The next membership change to propose (see the module docstring), or ``None``."""
    T = ConfChangeType

    def healthy(n: str) -> bool:
        m = members.get(n)
        return m is not None and m.status == "alive"

    def gone(n: str) -> bool:
        m = members.get(n)
        if m is not None and m.status == "left":
            return True
        return not healthy(n) and unhealthy_for.get(n, 0.0) >= stabilization_s

    for v in conf.voters:
        if v != leader and len(conf.voters) > 1 and gone(v):
            return ConfChange(T.REMOVE_VOTER, v)
    for lr in conf.learners:
        if gone(lr):
            return ConfChange(T.REMOVE_LEARNER, lr)
    alive = [m for m in members.values() if m.status == "alive"]
    target = target_voters(len(alive), max_voters)
    # a voter inside its stabilization period still counts: it is not replaced yet
    present_voters = [v for v in conf.voters if healthy(v) or not gone(v)]
    if len(present_voters) < target:
        candidates = sorted(
            (members[lr] for lr in conf.learners if healthy(lr) and caught_up(lr)), key=_rank
        )
        if candidates:
            return ConfChange(T.PROMOTE_LEARNER, candidates[0].node)
    # learners on their way to a voter slot do not count against the cap
    if len(conf.learners) < max_learners + max(0, target - len(present_voters)):
        in_group = {*conf.voters, *conf.learners}
        outside = sorted((m for m in alive if m.node not in in_group), key=_rank)
        if outside:
            return ConfChange(T.ADD_LEARNER, outside[0].node)
    return None


class Autopilot:
    """Runs ``decide`` every ``interval_s`` while this node leads, and proposes its change.

    ``members()`` returns the SWIM view (self included) as ``MemberHealth``."""

    def __init__(
        self,
        driver: RaftDriver,
        members: Callable[[], list[MemberHealth]],
        *,
        max_voters: int = 5,
        max_learners: int = 4,
        stabilization_s: float = 10.0,
        interval_s: float = 0.5,
    ) -> None:
        self.driver = driver
        self._members = members
        self.max_voters = max_voters
        self.max_learners = max_learners
        self.stabilization_s = stabilization_s
        self.interval_s = interval_s
        self._bad_since: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None
        self.changes = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="raft-autopilot")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

    def _caught_up(self, node: str) -> bool:
        pr = self.driver.node.progress(node)
        lag = self.driver.config.max_promote_lag
        return pr is not None and self.driver.node.last_index - pr.match <= lag

    async def step(self) -> ConfChange | None:
        """One round: observe, decide, propose (returns the change proposed, if any)."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        members = {m.node: m for m in self._members()}
        d = self.driver
        conf = d.node.conf_state
        for n in {*conf.voters, *conf.learners, *members}:
            m = members.get(n)
            if m is not None and m.status == "alive":
                self._bad_since.pop(n, None)
            else:
                self._bad_since.setdefault(n, now)
        if d.node.role is not Role.LEADER:
            return None
        if d.node.pending_conf_index > d.node.applied_index:
            return None
        unhealthy = {n: now - t for n, t in self._bad_since.items()}
        change = decide(d.node_id, conf, members, unhealthy, self._caught_up,
                        max_voters=self.max_voters, max_learners=self.max_learners,
                        stabilization_s=self.stabilization_s)  # fmt: skip
        if change is None:
            return None
        try:
            await d.propose_conf_change(change, timeout=5.0)
        except (ConfChangeError, NotLeader, Unavailable, OutcomeUnknown) as e:
            log_event(log, "raft.autopilot.failed", change=str(change), why=str(e))
            return None
        self.changes += 1
        log_event(log, "raft.autopilot", change=change.type.name, member=change.node)
        return change

    async def _run(self) -> None:
        while True:
            try:
                await self.step()
            except Exception:
                log.exception("autopilot round failed")
            await asyncio.sleep(self.interval_s)
