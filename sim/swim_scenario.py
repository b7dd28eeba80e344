"""One seeded SWIM scenario run with a verdict: a safety phase (loss, optional stalls and a
partition), then a liveness phase (faults stop and heal) that demands convergence in a bound.

False deaths: a DEAD event at an observer about a member that is running and that the observer
could reach both ways throughout (same side of any partition). With no stalls and loss ≤ 2 %
there must be none; stalled members are excluded (they had no two-way connectivity while
stalled) and counted separately.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

from consensus.core import NodeId
from consensus.swim_config import SwimConfig, lan, local, wan
from consensus.swim_types import EventKind

from .errors import LivenessFailure, SimFailure
from .kernel import derive_rng
from .scenario import LinkSpec
from .swim_cluster import SwimCluster
from .swim_run import S, build, run_until_converged, view_problems

CONFIGS = {"lan": lan, "wan": wan, "local": local}


@dataclass(frozen=True, slots=True)
class SwimScenario:
    """What to run (durations in seconds)."""

    nodes: int = 20
    config: str = "lan"
    lifeguard: bool = True
    loss: float = 0.02
    delay_ms: float = 1.0
    jitter_ms: float = 2.0
    seconds: float = 30.0
    stall_fraction: float = 0.0
    stall_s: tuple[float, float] = (1.0, 5.0)
    gap_s: tuple[float, float] = (1.0, 10.0)
    anomaly: str = "stall"
    """How the ``stall_fraction`` members misbehave: "stall" (paused process), "blocked"
    (receive path blocked for ``stall_s``, timers on time) or "slow" (packets read a lag in
    ``stall_s`` late for 5–20 s, timers on time); see ``sim.swim_run.false_positives``."""
    partition_s: float = 0.0
    """Split the cluster in two for the last this-many seconds of the safety phase; the
    liveness phase starts by healing it (0 = never)."""
    converge_bound_s: float = 120.0

    def swim_config(self) -> SwimConfig:
        cfg = CONFIGS[self.config]()
        return cfg if self.lifeguard else cfg.without_lifeguard()

    def repro(self, seed: int) -> str:
        flags = [
            f"--seed {seed}",
            f"--nodes {self.nodes}",
            f"--config {self.config}",
            f"--loss {self.loss}",
            f"--seconds {self.seconds}",
        ]
        if not self.lifeguard:
            flags.append("--no-lifeguard")
        if self.stall_fraction:
            flags.append(f"--stall-fraction {self.stall_fraction}")
            if self.anomaly != "stall":
                flags.append(f"--anomaly {self.anomaly}")
        if self.partition_s:
            flags.append(f"--partition {self.partition_s}")
        return "python -m sim swim " + " ".join(flags)


@dataclass(slots=True)
class SwimRunResult:
    """Outcome of one seed."""

    seed: int
    ok: bool = True
    failure: SimFailure | None = None
    false_deaths: int = 0
    stalled_deaths: int = 0
    suspicions: int = 0
    converge_s: float | None = None
    events: int = 0
    sim_s: float = 0.0
    wall_s: float = 0.0
    trace_hash: str = ""
    victims: list[NodeId] = field(default_factory=list)


def run_swim(sc: SwimScenario, seed: int) -> SwimRunResult:
    """Run ``sc`` with ``seed``; never raises a ``SimFailure`` (it is in the result)."""
    t0 = time.perf_counter()
    res = SwimRunResult(seed)
    link = LinkSpec(delay_ms=sc.delay_ms, jitter_ms=sc.jitter_ms, loss=sc.loss)
    cluster, rec = build(sc.nodes, seed, sc.swim_config(), link)
    rng = derive_rng(seed, "swim-scenario")
    stallers = _stallers(cluster, sc, rng)
    stalling = [True]
    if stallers:
        _schedule_stalls(cluster, stallers, sc, rng, stalling)
    groups: dict[NodeId, int] = {}
    if sc.partition_s > 0:
        ids = list(cluster.ids)
        rng.shuffle(ids)
        half = len(ids) // 2
        groups = {i: int(k >= half) for k, i in enumerate(ids)}
        start = max(0, int((sc.seconds - sc.partition_s) * S))
        sides = [sorted(ids[:half]), sorted(ids[half:])]
        cluster.kernel.after(start, cluster.network.partition, sides)
    try:
        cluster.run_for(int(sc.seconds * S))
        stalling[0] = False
        cluster.network.heal()
        cluster.network.set_default(LinkSpec(delay_ms=sc.delay_ms, jitter_ms=sc.jitter_ms))
        took = run_until_converged(cluster, int(sc.converge_bound_s * S))
        if took is None:
            problems = "; ".join(view_problems(cluster)[:5])
            raise LivenessFailure(
                f"views did not converge within {sc.converge_bound_s} s of healing: {problems}",
                time_us=cluster.now,
            )
        res.converge_s = took / S
    except SimFailure as failure:
        failure.seed = seed
        failure.repro = sc.repro(seed)
        failure.trace_tail = cluster.trace.tail()
        res.ok = False
        res.failure = failure
    stalled = frozenset(stallers)
    for seen in rec.events:
        ev = seen.event
        if ev.kind == EventKind.SUSPECTED:
            res.suspicions += 1
        if ev.kind != EventKind.DEAD:
            continue
        if ev.node in stalled or seen.observer in stalled:
            res.stalled_deaths += 1
        elif groups.get(ev.node) == groups.get(seen.observer):
            res.false_deaths += 1
            res.victims.append(ev.node)
    if res.ok and res.false_deaths and sc.loss <= 0.02:
        res.ok = False
        res.failure = SimFailure(
            f"{res.false_deaths} false deaths of members with two-way connectivity "
            f"(victims {sorted(set(res.victims))[:5]})"
        )
        res.failure.seed = seed
        res.failure.repro = sc.repro(seed)
    res.events = cluster.kernel.events_run
    res.sim_s = cluster.now / S
    res.trace_hash = cluster.trace.digest()
    res.wall_s = time.perf_counter() - t0
    return res


def _stallers(cluster: SwimCluster, sc: SwimScenario, rng: random.Random) -> list[NodeId]:
    if sc.stall_fraction <= 0:
        return []
    k = max(1, round(sc.nodes * sc.stall_fraction))
    return sorted(rng.sample(cluster.ids, k))


def _schedule_stalls(
    cluster: SwimCluster,
    stallers: list[NodeId],
    sc: SwimScenario,
    rng: random.Random,
    active: list[bool],
) -> None:
    def next_stall(node: NodeId) -> None:
        if not active[0]:
            return
        length = int(rng.uniform(*sc.stall_s) * S)
        if sc.anomaly == "blocked":
            cluster.slow(node, length, None)
        elif sc.anomaly == "slow":
            lag, length = length, int(rng.uniform(5.0, 20.0) * S)
            cluster.slow(node, length, lag)
        else:
            cluster.stall(node, length)
        cluster.kernel.after(length + int(rng.uniform(*sc.gap_s) * S), next_stall, node)

    for node in stallers:
        cluster.kernel.after(int(rng.uniform(*sc.gap_s) * S), next_stall, node)
