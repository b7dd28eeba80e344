"""The simulator's slow-member model (a *slow detector*) and what Lifeguard does about it.

A slow member's timers fire on time while its inbound packets reach its core late, so it misses
acks it has already received and reads refutations late. Plain SWIM then lets such a member
declare healthy peers dead in its own view; Lifeguard (health-scaled probing, a suspicion timer
that starts at its maximum) must not. Every failure message carries the seed.
"""

from __future__ import annotations

import pytest

from consensus.swim_config import local
from consensus.swim_types import EventKind
from sim.swim_run import S, Seen, build, false_positives
from sim.swim_scenario import SwimScenario, run_swim

SLOW = "n001"


def _slow_run(lifeguard: bool, seed: int) -> tuple[list[Seen], int, list[Seen]]:
    """Five members, local() preset (minimum suspicion 0.6 s), n001 reads its packets 1.5 s late
    for 6 s. Returns (DEAD events of healthy members, n001's peak health score, n001's own
    first-hand suspicions made while slow)."""
    cfg = local() if lifeguard else local().without_lifeguard()
    cluster, rec = build(5, seed, cfg)
    cluster.run_for(1 * S)
    t0 = cluster.now
    cluster.slow(SLOW, 6 * S, int(1.5 * S))
    peak = 0
    while cluster.now - t0 < 6 * S:
        cluster.run_for(50_000)
        peak = max(peak, cluster.core(SLOW).health_score)
    assert not cluster.is_slow(SLOW)
    cluster.run_for(6 * S)
    deaths = [s for s in rec.of_kind(EventKind.DEAD) if s.event.node != SLOW]
    accusations = [
        s
        for s in rec.of_kind(EventKind.SUSPECTED)
        if s.observer == SLOW and s.event.source == SLOW and t0 <= s.at < t0 + 6 * S
    ]
    return deaths, peak, accusations


@pytest.mark.parametrize("seed", [1, 2])
def test_a_slow_detector_declares_healthy_peers_dead_without_lifeguard(seed: int) -> None:
    deaths, peak, accusations = _slow_run(False, seed)
    assert accusations, f"seed {seed}: the slow member's timers did not fire while slow"
    assert deaths, f"seed {seed}: plain SWIM survived a 1.5 s lag against a 0.6 s minimum"
    own = [s for s in deaths if s.observer == SLOW and s.event.source == SLOW]
    assert own, f"seed {seed}: the slow member declared no healthy peer dead: {deaths}"
    assert peak == 0, f"seed {seed}: health awareness is off"


@pytest.mark.parametrize("seed", [1, 2])
def test_lifeguard_keeps_a_slow_detector_from_declaring_healthy_peers_dead(seed: int) -> None:
    deaths, peak, accusations = _slow_run(True, seed)
    assert not deaths, f"seed {seed}: {deaths}"
    assert accusations, f"seed {seed}: the slow member's timers did not fire while slow"
    assert peak >= 3, f"seed {seed}: missed acks and nacks did not raise the health score"


def test_blocked_receive_path_queues_packets_until_the_block_ends_while_timers_run() -> None:
    seed = 3
    cluster, rec = build(4, seed, local())
    cluster.run_for(1 * S)
    t0 = cluster.now
    cluster.slow(SLOW, S // 2, None)  # shorter than the 0.6 s minimum suspicion timeout
    inc = cluster.core(SLOW).incarnation
    cluster.run_for(S // 2 - 1)
    own = [s for s in rec.of_kind(EventKind.SUSPECTED) if s.observer == SLOW and s.at >= t0]
    assert own, f"seed {seed}: no probe failed while the receive path was blocked"
    # Nothing was read while blocked: n001 cannot have learned of its own suspicion yet.
    assert cluster.core(SLOW).incarnation == inc, f"seed {seed}"
    cluster.run_for(3 * S)
    assert not cluster.is_slow(SLOW)
    live = cluster.core(SLOW).live_members()
    assert live == sorted(cluster.ids), f"seed {seed}: {live}"
    assert not rec.of_kind(EventKind.DEAD), f"seed {seed}"


def test_a_crash_drops_the_slow_members_queue_and_a_restart_is_not_slow() -> None:
    seed = 4
    cluster, _ = build(4, seed, local())
    cluster.run_for(1 * S)
    cluster.slow(SLOW, 5 * S, 2 * S)
    cluster.run_for(1 * S)
    cluster.crash(SLOW)
    assert not cluster.is_slow(SLOW)
    cluster.run_for(3 * S)  # handovers queued before the crash fall due: must be dropped
    cluster.restart(SLOW)
    cluster.run_for(3 * S)
    assert not cluster.is_slow(SLOW)
    assert cluster.core(SLOW).live_members() == sorted(cluster.ids), f"seed {seed}"


def test_slow_rejects_a_negative_lag() -> None:
    cluster, _ = build(2, 5, local())
    with pytest.raises(ValueError):
        cluster.slow(SLOW, S, -1)


def test_false_positives_counts_a_slow_detectors_victims_at_its_own_view() -> None:
    seed = 6
    fp = false_positives(
        5, seed, local().without_lifeguard(), loss=0.0, stall_fraction=0.2, duration_s=20,
        anomaly="slow", stall_s=(1.5, 1.5), slow_period_s=(4.0, 4.0),
    )  # fmt: skip
    assert fp.stalls > 0
    assert fp.deaths_of_healthy > 0, f"seed {seed}: {fp}"
    assert fp.deaths_of_healthy_at_stalled > 0, f"seed {seed}: {fp}"
    with pytest.raises(ValueError):
        false_positives(5, seed, local(), anomaly="frozen")


def test_sim_swim_scenario_runs_slow_members_deterministically() -> None:
    sc = SwimScenario(nodes=8, seconds=10, stall_fraction=0.2, loss=0.01, anomaly="slow")
    a, b = run_swim(sc, 7), run_swim(sc, 7)
    assert a.ok, a.failure
    assert a.trace_hash == b.trace_hash
    assert "--anomaly slow" in sc.repro(7)
