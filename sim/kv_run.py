"""Run one replicated-KV scenario with one seed and judge it.

A run: a Raft group of ``voters`` founding voters plus ``spares`` nodes that start outside it,
the KV as state machine (``sim.kv_adapter``, with snapshots and log compaction), KV clients
recording a history (``sim.kv_clients``) and, optionally, membership changes and leadership
transfers (``sim.kv_membership``).

1. **Safety phase** (``safety_ms``): faults from ``faults`` (crashes with restarts, partitions,
   drift), membership changes, client traffic; the Raft checkers (``sim.raft_checkers``) run on
   every step.
2. **Liveness phase** (at most ``liveness_ms``): faults and changes stop, every node restarts
   and the network heals. A voter must lead with every running voter following it, a write
   issued after the heal must complete, and every member must apply it.
3. **Judgement**: clients stop, pending operations complete or become unknown; the Raft
   checkers' end-of-run check; every member at the same applied index holds the same store,
   byte for byte; the history passes ``sim.linearizability.check`` (an undecided check is a
   failure too). All along, a watcher per node checks that its prefix watch stream is
   coherent (``sim.kv_watchers``).

With ``KvClientSpec.batch_ms`` > 0 (the ``batched`` preset, or ``--batch-ms``) the clients'
writes reach the log grouped into ``Batch`` entries as the node's driver groups them
(``sim.kv_batch``), and the same checks judge them; ``KvRunResult`` counts the batches.

``run_kv(scenario, seed)`` never raises on a found bug: the ``KvRunResult`` carries the report
with the seed and the command that reproduces it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from consensus.core import Micros, NodeId
from consensus.raft import RaftConfig, Role

from .cluster import Cluster, ms
from .errors import InvariantViolation, LivenessFailure, SimFailure
from .faults import FaultInjector
from .kernel import derive_rng
from .kv_adapter import KvAdapter, KvApp
from .kv_clients import KvClients, KvClientSpec, leader_of
from .kv_membership import MembershipDriver, MembershipSpec
from .kv_watchers import KvWatchers
from .linearizability import DEFAULT_BUDGET, Operation, check
from .raft_checkers import RaftChecker
from .raft_run import CONFIGS, _core_raised
from .scenario import FaultSpec, LinkSpec


@dataclass(frozen=True, slots=True)
class KvScenario:
    """A KV run description (without its seed)."""

    name: str
    voters: int = 3
    spares: int = 2
    safety_ms: float = 4_000.0
    liveness_ms: float = 10_000.0
    link: LinkSpec = field(default_factory=LinkSpec)
    faults: FaultSpec = field(default_factory=FaultSpec)
    clients: KvClientSpec = field(default_factory=KvClientSpec)
    membership: MembershipSpec | None = None
    snapshot_every: int = 0
    """Entries between a node's snapshots (0: never)."""
    snapshot_keep: int = 0
    """Entries kept behind a snapshot for slightly lagging followers."""
    retain: int = 64
    """The KV store's retained history (revisions)."""
    config: str = "lan"
    budget: int = DEFAULT_BUDGET
    """Linearizability checker budget (states explored)."""
    wire: bool = False
    """Encode and decode every Raft message (snapshots with KV data included) on delivery."""


_LINK = LinkSpec(delay_ms=3.0, jitter_ms=2.0, loss=0.01, duplicate=0.01, reorder=0.02)


BATCH_CLIENTS = KvClientSpec(clients=16, keys=8, interval_ms=15.0, batch_ms=10.0)
"""The ``batched`` preset's clients: enough of them, on enough keys, writing often enough that
the writes held for 10 ms form batches of several commands (about 2 writes per entry on
average, up to 6 or 7, in ``mixed`` faults)."""


def kv_preset(name: str, voters: int = 3) -> KvScenario:
    """Named scenarios: ``calm``, ``crashes``, ``partitions``, ``membership`` and ``mixed``
    (crashes, partitions, membership changes, transfers and snapshots together), and
    ``batched``: ``mixed`` with more clients whose writes share ``Batch`` entries."""
    members = MembershipSpec(min_voters=voters, max_voters=voters + 2)
    crashes = FaultSpec(crash_every_ms=900.0, downtime_ms=(50.0, 1200.0), persist_ms=(0.0, 1.0))
    parts = FaultSpec(partition_every_ms=700.0, partition_ms=(100.0, 1500.0), drift_ppm=200)
    mixed = FaultSpec(
        crash_every_ms=1_200.0,
        downtime_ms=(50.0, 1_200.0),
        partition_every_ms=900.0,
        partition_ms=(100.0, 1_500.0),
        persist_ms=(0.0, 1.0),
        drift_ppm=200,
    )
    base = KvScenario(name=name, voters=voters, link=_LINK, snapshot_every=25, snapshot_keep=4)
    table = {
        "calm": base,
        "crashes": _replace(base, faults=crashes),
        "partitions": _replace(base, faults=parts),
        "membership": _replace(base, membership=members),
        "mixed": _replace(base, faults=mixed, membership=members),
        "batched": _replace(base, faults=mixed, membership=members, clients=BATCH_CLIENTS),
    }
    if name not in table:
        raise ValueError(f"unknown KV preset {name!r}; known: {sorted(table)}")
    return table[name]


KV_PRESETS = ("calm", "crashes", "partitions", "membership", "mixed")
"""The presets whose clients propose each write as its own entry (``tests/sim`` cycles
through them by seed: keep their order)."""
ALL_KV_PRESETS = (*KV_PRESETS, "batched")
"""Every preset ``kv_preset`` knows (what the CLI sweeps by default)."""


def _replace(s: KvScenario, **changes: object) -> KvScenario:
    import dataclasses

    return dataclasses.replace(s, **changes)  # type: ignore[arg-type]


@dataclass(slots=True)
class KvRunResult:
    """The outcome of one seed (plain, picklable data)."""

    seed: int
    scenario: str
    ok: bool
    failure: str | None
    trace_hash: str
    wall_s: float
    sim_s: float
    operations: int
    unknown: int
    check_s: float
    explored: int
    crashes: int
    partitions: int
    conf_changes: int
    snapshots_taken: int
    snapshots_installed: int
    watch_events: int = 0
    watch_resyncs: int = 0
    stats: dict[str, float] = field(default_factory=dict)
    batch_entries: int = 0
    """``Batch`` entries the clients proposed (0 unless ``batch_ms`` > 0)."""
    batched_writes: int = 0
    """Writes proposed inside those ``Batch`` entries."""
    max_batch: int = 0
    """Most writes proposed in one entry."""
    batches_applied: int = 0
    """``Batch`` entries whose proposer applied them and handed each write its result."""


def repro_command(scenario: KvScenario, seed: int) -> str:
    """The exact command that replays this run."""
    wire = " --wire" if scenario.wire else ""
    batch_ms = scenario.clients.batch_ms
    preset_ms = kv_preset(scenario.name).clients.batch_ms if scenario.name in ALL_KV_PRESETS else 0
    batch = f" --batch-ms {batch_ms:g}" if batch_ms != preset_ms else ""
    return (
        f"python -m sim kv --seed {seed} --scenario {scenario.name} "
        f"--voters {scenario.voters}{wire}{batch}"
    )


@dataclass(slots=True)
class KvHarness:
    """A built, not yet run, KV cluster (for the runner, tests and benchmarks)."""

    cluster: Cluster
    adapter: KvAdapter
    checker: RaftChecker
    clients: KvClients
    membership: MembershipDriver | None
    members0: tuple[NodeId, ...]
    watchers: KvWatchers


def build(scenario: KvScenario, seed: int, config: RaftConfig | None = None) -> KvHarness:
    """The cluster of ``scenario`` with its checker, clients and membership driver."""
    voters = [f"n{i}" for i in range(scenario.voters)]
    spares = [f"n{i}" for i in range(scenario.voters, scenario.voters + scenario.spares)]
    adapter = KvAdapter(
        voters,
        config or CONFIGS[scenario.config](),
        snapshot_every=scenario.snapshot_every,
        snapshot_keep=scenario.snapshot_keep,
        retain=scenario.retain,
    )
    cluster = Cluster(
        adapter,
        voters + spares,
        seed,
        scenario.link,
        wire=scenario.wire,
        drift_ppm=scenario.faults.drift_ppm,
        persist_ms=scenario.faults.persist_ms,
    )
    checker = RaftChecker()
    clients = KvClients(cluster, scenario.clients, derive_rng(seed, "kv-clients"), checker)
    watchers = KvWatchers(cluster)
    cluster.add_observer(checker)
    cluster.add_observer(clients)
    cluster.add_observer(watchers)
    driver = None
    if scenario.membership is not None:
        driver = MembershipDriver(
            cluster, scenario.membership, derive_rng(seed, "membership"), spares
        )
    return KvHarness(cluster, adapter, checker, clients, driver, tuple(voters), watchers)


def run_kv(scenario: KvScenario, seed: int) -> KvRunResult:
    """Run ``scenario`` with ``seed``; see the module docstring."""
    wall0 = time.perf_counter()
    h = build(scenario, seed)
    cluster, clients = h.cluster, h.clients
    inj = FaultInjector(cluster, scenario.faults, derive_rng(seed, "faults"))
    failure: str | None = None
    check_s = 0.0
    explored = 0
    history = clients.history
    try:
        cluster.start()
        clients.start()
        inj.start()
        if h.membership is not None:
            h.membership.start()
        cluster.run_for(ms(scenario.safety_ms))
        inj.stop()
        if h.membership is not None:
            h.membership.stop()
        history = finish_run(h, scenario)
        t0 = time.perf_counter()
        verdict = check(history, scenario.budget)
        check_s = time.perf_counter() - t0
        explored = verdict.explored
        if not verdict.ok:
            raise InvariantViolation(f"KV history: {verdict.report()}", time_us=cluster.now)
    except Exception as raised:
        e = raised if isinstance(raised, SimFailure) else _core_raised(raised, cluster.now)
        e.seed = seed
        e.repro = repro_command(scenario, seed)
        e.trace_tail = cluster.trace.tail()
        failure = str(e) + "\n  last events:\n    " + "\n    ".join(e.trace_tail[-20:])
    conf = h.membership.stats.proposed if h.membership is not None else {}
    batches = clients.batch_stats
    return KvRunResult(
        seed=seed,
        scenario=scenario.name,
        ok=failure is None,
        failure=failure,
        trace_hash=cluster.trace.digest(),
        wall_s=time.perf_counter() - wall0,
        sim_s=cluster.now / 1e6,
        operations=len(history),
        unknown=clients.stats.unknown,
        check_s=check_s,
        explored=explored,
        crashes=inj.crashes,
        partitions=inj.partitions,
        conf_changes=sum(conf.values()),
        snapshots_taken=h.adapter.stats.taken,
        snapshots_installed=h.adapter.stats.installed,
        watch_events=h.watchers.events,
        watch_resyncs=h.watchers.resyncs,
        stats=cluster.stats(),
        batch_entries=batches.batch_entries,
        batched_writes=batches.batched_writes,
        max_batch=batches.max_batch,
        batches_applied=batches.batches_applied,
    )


def finish_run(h: KvHarness, scenario: KvScenario) -> list[Operation]:
    """Phases 2 and 3 up to the history check, for a harness whose faults have stopped: heal,
    demand liveness, stop the clients and let their operations end, then the Raft checkers'
    end-of-run check and the identical-state check (``SimFailure`` on a failed one). Returns
    the history for ``sim.linearizability.check``."""
    cluster, clients = h.cluster, h.clients
    _liveness(h, scenario)
    clients.stop()
    cluster.run_for(ms(scenario.clients.timeout_ms), lambda: clients.pending() == 0)
    history = clients.finish()
    h.checker.finish(cluster)
    _same_state(cluster)
    return history


def members_of(cluster: Cluster) -> tuple[NodeId, ...]:
    """Voters and learners in the membership of the current leader (empty without one)."""
    lead = leader_of(cluster)
    if lead is None:
        return ()
    return tuple(sorted(lead.core.voters + lead.core.learners))


def settled_leader(cluster: Cluster) -> NodeId | None:
    """A running voter that leads, is not handing over, and every running voter follows."""
    lead = leader_of(cluster)
    if lead is None or lead.id not in lead.core.voters or lead.core.transferee is not None:
        return None
    for v in lead.core.voters:
        n = cluster.nodes[v]
        if not n.up or n.core.leader_id != lead.id or n.core.term != lead.core.term:
            return None
    return lead.id


def _liveness(h: KvHarness, scenario: KvScenario) -> Micros:
    """Heal everything; require a settled leader, a new write and every member applying it.
    Returns the virtual µs it took."""
    cluster, clients = h.cluster, h.clients
    cluster.network.heal()
    for i in cluster.ids:
        cluster.restart(i)
    cluster.trace.record(cluster.now, "heal-all")
    t0 = cluster.now
    deadline = t0 + ms(scenario.liveness_ms)
    cluster.run_until(deadline, lambda: settled_leader(cluster) is not None)
    if settled_leader(cluster) is None:
        raise LivenessFailure(
            f"no settled leader {scenario.liveness_ms:.0f} ms after healing everything",
            time_us=cluster.now,
        )
    clients.watch_progress(cluster.now)
    cluster.run_until(deadline, lambda: clients.progress_index is not None)
    want = clients.progress_index
    if want is None:
        raise LivenessFailure(
            f"no write issued after the heal completed within {scenario.liveness_ms:.0f} ms",
            time_us=cluster.now,
        )

    def applied() -> bool:
        members = members_of(cluster)
        return bool(members) and all(
            cluster.nodes[m].up and cluster.nodes[m].app.applied_index >= want for m in members
        )

    cluster.run_until(deadline, applied)
    if not applied():
        lag = {m: cluster.nodes[m].app.applied_index for m in members_of(cluster)}
        raise LivenessFailure(
            f"members did not all apply index {want} within {scenario.liveness_ms:.0f} ms "
            f"(applied: {lag})",
            time_us=cluster.now,
        )
    return cluster.now - t0


def _same_state(cluster: Cluster) -> None:
    """Members at the same applied index hold byte-identical stores."""
    by_index: dict[int, tuple[NodeId, bytes]] = {}
    for m in members_of(cluster):
        node = cluster.nodes[m]
        if not node.up or node.core.role is Role.PRE_CANDIDATE:
            continue
        app: KvApp = node.app
        snap = app.store.snapshot()
        seen = by_index.setdefault(app.applied_index, (m, snap))
        if seen[1] != snap:
            raise InvariantViolation(
                f"KV state differs at applied index {app.applied_index}: {seen[0]} and {m}",
                time_us=cluster.now,
            )
