"""Seeded simulator runs of real Raft clusters: 3 and 5 nodes under loss, duplication,
reordering, partitions (symmetric and asymmetric), crashes with lost fsyncs, and clock drift.

Every run checks the Raft safety properties on every step and ends with a liveness phase that
must elect a leader and make progress. A failure message carries the seed and the command that
reproduces it. ``python -m sim raft --seeds 0:1000 --workers 2`` runs thousands more.
"""

from __future__ import annotations

import pytest

from sim.raft_run import run_raft
from sim.scenario import preset

FAULTY = ("lossy", "partitions", "crashes", "chaos")
SEEDS_PER_CASE = 12

REGRESSIONS = [
    ("partitions", 3, 261),  # a lagging node holding a stale entry; a stale isolated leader
]
CASES = (
    [("calm", n, s) for n in (3, 5) for s in range(3)]
    + [(name, n, s) for name in FAULTY for n in (3, 5) for s in range(SEEDS_PER_CASE)]
    + REGRESSIONS
)


@pytest.mark.parametrize(("scenario", "nodes", "seed"), CASES)
def test_raft_cluster_stays_safe_and_recovers(scenario: str, nodes: int, seed: int) -> None:
    res = run_raft(preset(scenario, nodes), seed)
    assert res.ok, res.failure
    assert res.acked > 0, f"seed={seed}: no request was ever acknowledged"
    assert res.commit_after_heal_ms is not None


@pytest.mark.parametrize("seed", range(4))
def test_raft_cluster_over_the_wire_codec(seed: int) -> None:
    res = run_raft(preset("chaos", 5).replace(wire=True), 1000 + seed)
    assert res.ok, res.failure


def test_faulty_scenarios_actually_inject_faults() -> None:
    crashes = run_raft(preset("crashes", 5), 1)
    parts = run_raft(preset("partitions", 5), 1)
    lossy = run_raft(preset("lossy", 5), 1)
    assert crashes.crashes > 3 and parts.partitions > 3
    assert lossy.stats["dropped"] > 0 and lossy.stats["duplicated"] > 0
