"""Seeded simulator runs of SWIM: no false deaths under loss, convergence after partitions,
crashes, restarts, stalls and random faults, graceful leave, determinism.

Every failure message carries the seed; replay with the same arguments to reproduce.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from consensus.swim_config import lan, local
from consensus.swim_messages import MemberStatus
from consensus.swim_types import EventKind
from sim.faults import FaultInjector
from sim.kernel import derive_rng
from sim.scenario import FaultSpec, LinkSpec
from sim.swim_run import S, build, false_positives, run_until_converged, view_problems

ROOT = Path(__file__).resolve().parents[2]
LOCAL_BOUND = 15 * S
"""Convergence bound after faults heal with the local() preset."""


def converge(cluster, bound: int, seed: int) -> None:  # type: ignore[no-untyped-def]
    took = run_until_converged(cluster, bound)
    assert took is not None, f"seed {seed}: no convergence in {bound / S} s: " + "; ".join(
        view_problems(cluster)[:5]
    )


def test_nodes_join_through_a_seed_and_converge_over_the_wire_codec() -> None:
    seed = 11
    cluster, rec = build(12, seed, local(), bootstrap=False, wire=True)
    converge(cluster, 5 * S, seed)
    joined = {(s.observer, s.event.node) for s in rec.of_kind(EventKind.JOINED)}
    assert len(joined) == 12 * 11, f"seed {seed}"
    assert not rec.of_kind(EventKind.DEAD), f"seed {seed}"


@pytest.mark.parametrize(
    ("n", "loss", "seconds", "seed"),
    [
        (5, 0.02, 120, 1),
        (5, 0.02, 120, 2),
        (20, 0.02, 60, 3),
        (20, 0.01, 60, 4),
        (50, 0.02, 40, 5),
        (100, 0.02, 20, 6),
        (200, 0.02, 10, 7),
    ],
)
def test_no_false_deaths_with_two_way_connectivity_up_to_two_percent_loss(
    n: int, loss: float, seconds: int, seed: int
) -> None:
    cluster, rec = build(n, seed, lan(), LinkSpec(loss=loss, jitter_ms=2.0))
    cluster.run_for(seconds * S)
    deaths = [(s.observer, s.event.node) for s in rec.of_kind(EventKind.DEAD)]
    assert deaths == [], f"seed {seed}: false deaths {deaths[:5]}"
    converge(cluster, 30 * S, seed)


def test_a_healed_partition_merges_back() -> None:
    seed = 21
    cluster, _ = build(20, seed, local())
    cluster.run_for(1 * S)
    left, right = cluster.ids[:10], cluster.ids[10:]
    cluster.network.partition([left, right])
    cluster.run_for(10 * S)
    view = cluster.core(left[0]).member(right[0])
    assert view is None or view.status == MemberStatus.DEAD, f"seed {seed}: partition unseen"
    cluster.network.heal()
    converge(cluster, LOCAL_BOUND, seed)


def test_a_healed_partition_merges_back_with_lan_timings() -> None:
    seed = 22
    cluster, _ = build(30, seed, lan())
    cluster.run_for(2 * S)
    cluster.network.partition([cluster.ids[:12], cluster.ids[12:]])
    cluster.run_for(60 * S)
    cluster.network.heal()
    converge(cluster, 120 * S, seed)


def test_a_crashed_member_is_declared_dead_everywhere_and_rejoins_after_restart() -> None:
    seed = 23
    cluster, rec = build(20, seed, local())
    cluster.run_for(1 * S)
    victim = "n005"
    cluster.crash(victim)
    others = [i for i in cluster.ids if i != victim]
    converge(cluster, LOCAL_BOUND, seed)
    for i in others:
        m = cluster.core(i).member(victim)
        assert m is None or m.status == MemberStatus.DEAD, f"seed {seed}: {i} sees {m}"
    restarted_at = cluster.now
    cluster.restart(victim)
    converge(cluster, LOCAL_BOUND, seed)
    assert cluster.core(victim).incarnation >= 1, f"seed {seed}: rejoined without refuting"
    back = {EventKind.ALIVE, EventKind.JOINED}
    saw_back = {
        s.observer
        for s in rec.events
        if s.event.node == victim and s.event.kind in back and s.at >= restarted_at
    }
    assert saw_back == set(others), f"seed {seed}"


def test_asymmetric_cut_heals() -> None:
    seed = 24
    cluster, _ = build(10, seed, local())
    cluster.run_for(1 * S)
    for other in cluster.ids[1:]:
        cluster.network.block(cluster.ids[0], other)  # n000 can receive but not send
    cluster.run_for(5 * S)
    cluster.network.heal()
    converge(cluster, LOCAL_BOUND, seed)


def test_stalls_kill_no_healthy_member_with_lifeguard() -> None:
    seed = 25
    fp = false_positives(50, seed, lan(), loss=0.01, stall_fraction=0.04, duration_s=60)
    assert fp.stalls > 0
    assert fp.deaths_of_healthy == 0, f"seed {seed}: {fp}"


def test_a_member_that_refuted_is_not_killed_by_a_confirmation_of_a_stale_suspicion() -> None:
    # Regression (seed 47): one member missed n038's refutation and still held it SUSPECT at
    # an old incarnation; a new suspicion 16 s later, at the new incarnation, counted as a
    # confirmation of the old one, whose shrunk timer was already due: n038 died at once.
    seed = 47
    fp = false_positives(50, seed, lan(), loss=0.01, stall_fraction=0.02, duration_s=46)
    assert fp.stalls > 0
    assert fp.deaths == 0, f"seed {seed}: {fp}"


def test_random_crashes_and_partitions_then_heal_converges() -> None:
    for seed in (31, 32):
        cluster, _ = build(15, seed, local())
        spec = FaultSpec(
            crash_every_ms=1500, downtime_ms=(200, 3000), partition_every_ms=1500,
            partition_ms=(200, 4000),
        )  # fmt: skip
        faults = FaultInjector(cluster, spec, derive_rng(seed, "faults"))
        faults.start()
        cluster.run_for(20 * S)
        faults.stop()
        cluster.network.heal()
        for i in cluster.ids:
            cluster.restart(i)  # no-op for running nodes
        converge(cluster, 2 * LOCAL_BOUND, seed)


def test_graceful_leave_is_seen_as_left_not_dead() -> None:
    seed = 26
    cluster, rec = build(10, seed, local())
    cluster.run_for(1 * S)
    leaver = "n003"
    cluster.call(leaver, lambda core, now: core.leave(now))
    cluster.run_for(3 * S, stop=lambda: cluster.core(leaver).leave_complete())
    assert cluster.core(leaver).leave_complete(), f"seed {seed}"
    cluster.crash(leaver)
    converge(cluster, LOCAL_BOUND, seed)
    kinds = {s.event.kind for s in rec.events if s.event.node == leaver}
    assert kinds == {EventKind.LEFT}, f"seed {seed}: {kinds}"


def _digest(seed: int) -> tuple[str, int]:
    cluster, rec = build(8, seed, replace(local(), probe_timeout=20_000), LinkSpec(loss=0.05))
    cluster.run_for(1 * S)
    cluster.crash("n002")
    cluster.run_for(5 * S)
    return cluster.trace.digest(), len(rec.events)


def test_same_seed_same_trace() -> None:
    assert _digest(5) == _digest(5)
    assert _digest(5) != _digest(6)


def test_trace_does_not_depend_on_the_hash_seed() -> None:
    code = "from tests.sim.test_swim_sim import _digest; print(_digest(9))"
    outs = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        done = subprocess.run(
            [sys.executable, "-c", code],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        outs.add(done.stdout.strip())
    assert len(outs) == 1, outs


def test_a_stalled_member_is_suspected_then_refutes_when_it_wakes() -> None:
    seed = 27
    cluster, rec = build(8, seed, lan())
    cluster.run_for(2 * S)
    cluster.stall("n001", 3 * S)
    assert cluster.stalled("n001")
    cluster.run_for(3 * S + 1)
    assert not cluster.stalled("n001")
    suspected = [s for s in rec.of_kind(EventKind.SUSPECTED) if s.event.node == "n001"]
    assert suspected, f"seed {seed}: nobody noticed the stall"
    converge(cluster, 10 * S, seed)
    assert cluster.core("n001").incarnation >= 1, f"seed {seed}"
    assert not rec.of_kind(EventKind.DEAD), f"seed {seed}"


def test_push_pull_streams_need_both_directions() -> None:
    seed = 28
    cluster, _ = build(4, seed, replace(local(), push_pull_interval=200_000))
    cluster.run_for(1 * S)
    before = cluster.stream_failures
    for other in cluster.ids[1:]:
        cluster.network.block(other, cluster.ids[0])  # n000 can send but not receive
    cluster.run_for(2 * S)
    assert cluster.stream_failures > before, f"seed {seed}"
    assert cluster.streams.messages > 0 and cluster.streams.bytes > 0
