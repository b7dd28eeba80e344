"""Run one Raft scenario with one seed: safety phases with faults, then a liveness phase.

``run_raft(scenario, seed)`` never raises on a found bug: it returns a ``RaftRunResult`` whose
``failure`` holds the report (with the seed, the command that reproduces it and the tail of the
trace). Results are plain picklable data, so sweeps can run seeds in worker processes.

Liveness phase (TigerBeetle VOPR style): faults stop; a majority chosen by the seed (the core)
is restarted and fully reconnected, and every link between the core and the other nodes is cut
(those stay crashed or running as the faults left them, but isolated). Before the phase's
duration elapses a core node must lead, a client request issued after the heal must be
acknowledged, and every core node must apply up to that request's index.
"""

from __future__ import annotations

import random
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from consensus.core import Micros, NodeId
from consensus.raft import RaftConfig, Role

from .cluster import Cluster, ms
from .errors import CoreMisbehaved, LivenessFailure, SimFailure
from .faults import FaultInjector
from .kernel import derive_rng
from .raft_adapter import RaftAdapter, RaftApp
from .raft_checkers import RaftChecker
from .raft_clients import RaftClients
from .scenario import Phase, Scenario

CONFIGS = {"lan": RaftConfig.lan, "local": RaftConfig.local, "wan": RaftConfig.wan}


@dataclass(slots=True)
class RaftRunResult:
    """The outcome of one seed."""

    seed: int
    scenario: str
    nodes: int
    ok: bool
    failure: str | None
    trace_hash: str
    events: int
    sim_s: float
    wall_s: float
    acked: int
    abandoned: int
    failed: int
    crashes: int
    partitions: int
    leader_after_heal_ms: float | None = None
    commit_after_heal_ms: float | None = None
    stats: dict[str, float] = field(default_factory=dict)


def node_ids(n: int) -> list[NodeId]:
    """The ids of an n-node cluster: n0, n1, ..."""
    return [f"n{i}" for i in range(n)]


def repro_command(scenario: Scenario, seed: int, config: str, source: str | None) -> str:
    """The exact command that replays this run."""
    where = f"--scenario-file {source}" if source else f"--scenario {scenario.name}"
    wire = " --wire" if scenario.wire else ""
    return (
        f"python -m sim raft --seed {seed} {where} --nodes {scenario.nodes} --config {config}{wire}"
    )


def build(
    scenario: Scenario, seed: int, config: RaftConfig
) -> tuple[Cluster, RaftChecker, RaftClients]:
    """A started-but-not-run cluster with its checker and clients (for tests and benches)."""
    ids = node_ids(scenario.nodes)
    first = scenario.phases[0]
    cluster = Cluster(
        RaftAdapter(ids, config),
        ids,
        seed,
        first.link,
        wire=scenario.wire,
        drift_ppm=first.faults.drift_ppm,
        persist_ms=first.faults.persist_ms,
    )
    checker = RaftChecker()
    clients = RaftClients(cluster, scenario.clients, derive_rng(seed, "clients"), checker)
    cluster.add_observer(checker)
    cluster.add_observer(clients)
    return cluster, checker, clients


def run_raft(
    scenario: Scenario,
    seed: int,
    *,
    config: str = "lan",
    source: str | None = None,
) -> RaftRunResult:
    """Run ``scenario`` with ``seed``; see the module docstring."""
    wall0 = time.perf_counter()
    cluster, checker, clients = build(scenario, seed, CONFIGS[config]())
    faults_rng = derive_rng(seed, "faults")
    injectors: list[FaultInjector] = []
    failure: str | None = None
    leader_ms = commit_ms = None
    try:
        cluster.start()
        clients.start()
        for phase in scenario.phases:
            cluster.network.set_default(phase.link)
            cluster.drift_ppm = phase.faults.drift_ppm
            cluster.persist_ms = phase.faults.persist_ms
            if phase.kind == "safety":
                inj = FaultInjector(cluster, phase.faults, faults_rng)
                injectors.append(inj)
                inj.start()
                cluster.run_for(ms(phase.duration_ms))
                inj.stop()
            else:
                leader_ms, commit_ms = _liveness(cluster, clients, phase, faults_rng)
        checker.finish(cluster)
    except Exception as raised:
        e = raised if isinstance(raised, SimFailure) else _core_raised(raised, cluster.now)
        e.seed = seed
        e.repro = repro_command(scenario, seed, config, source)
        e.trace_tail = cluster.trace.tail()
        failure = str(e) + "\n  last events:\n    " + "\n    ".join(e.trace_tail[-20:])
    return RaftRunResult(
        seed=seed,
        scenario=scenario.name,
        nodes=scenario.nodes,
        ok=failure is None,
        failure=failure,
        trace_hash=cluster.trace.digest(),
        events=cluster.kernel.events_run,
        sim_s=cluster.now / 1e6,
        wall_s=time.perf_counter() - wall0,
        acked=clients.acked,
        abandoned=clients.abandoned,
        failed=clients.failed,
        crashes=sum(i.crashes for i in injectors),
        partitions=sum(i.partitions for i in injectors),
        leader_after_heal_ms=leader_ms,
        commit_after_heal_ms=commit_ms,
        stats=cluster.stats(),
    )


def _core_raised(exc: Exception, now: Micros) -> CoreMisbehaved:
    """Wrap an unexpected exception (a core's own assertion, a crash) as a failure report."""
    tb = traceback.extract_tb(exc.__traceback__)
    where = " <- ".join(f"{Path(f.filename).name}:{f.lineno}" for f in reversed(tb[-4:]))
    return CoreMisbehaved(f"raised {type(exc).__name__}: {exc} (at {where})", time_us=now)


def _liveness(
    cluster: Cluster, clients: RaftClients, phase: Phase, rng: random.Random
) -> tuple[float, float]:
    ids = list(cluster.ids)
    core = sorted(rng.sample(ids, len(ids) // 2 + 1))
    cluster.trace.record(cluster.now, "heal", core)
    for i in core:
        cluster.restart(i)
    cluster.network.heal(among=core)
    cluster.network.partition([core, [i for i in ids if i not in core]])
    t0 = cluster.now
    deadline = t0 + ms(phase.duration_ms)
    clients.watch_progress(t0)
    leader_at: list[Micros] = []

    def leader_in_core() -> bool:
        for i in core:
            n = cluster.nodes[i]
            if n.up and n.core.role is Role.LEADER:
                leader_at.append(cluster.now)
                return True
        return False

    def converged() -> bool:
        if clients.progress_at is None:
            return False
        want = clients.progress_index
        return all(
            isinstance(cluster.nodes[i].app, RaftApp) and cluster.nodes[i].app.applied_index >= want
            for i in core
        )

    if not leader_in_core():
        cluster.run_until(deadline, leader_in_core)
    if not leader_at:
        raise LivenessFailure(
            f"no leader in the healed majority {core} within {phase.duration_ms:.0f} ms",
            time_us=cluster.now,
        )
    if not converged():
        cluster.run_until(deadline, converged)
    if clients.progress_at is None:
        raise LivenessFailure(
            f"healed majority {core} has leader but acknowledged no new request within "
            f"{phase.duration_ms:.0f} ms",
            time_us=cluster.now,
        )
    if not converged():
        lag = {i: cluster.nodes[i].app.applied_index for i in core}
        raise LivenessFailure(
            f"healed majority {core} did not all apply index {clients.progress_index} "
            f"within {phase.duration_ms:.0f} ms (applied: {lag})",
            time_us=cluster.now,
        )
    return (leader_at[0] - t0) / 1000, (clients.progress_at - t0) / 1000
