"""``python -m sim swim``: one seed and a small sweep, through the real entry point."""

from __future__ import annotations

import pytest

from sim.cli import main
from sim.swim_scenario import SwimScenario, run_swim


def test_one_seed_prints_its_outcome(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["swim", "--seed", "4", "--nodes", "8", "--seconds", "10"]) == 0
    out = capsys.readouterr().out
    assert "seed 4 ok" in out and "false_deaths=0" in out


def test_sweep_reports_the_false_death_rate(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["swim", "--seeds", "0:3", "--nodes", "6", "--seconds", "10", "--partition", "5"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "runs with a false death" in out and "0 (0.00%)" in out


def test_a_run_is_reproducible_from_its_seed() -> None:
    sc = SwimScenario(nodes=8, seconds=10, stall_fraction=0.2, loss=0.05)
    a, b = run_swim(sc, 12), run_swim(sc, 12)
    assert (a.trace_hash, a.suspicions, a.stalled_deaths) == (
        b.trace_hash,
        b.suspicions,
        b.stalled_deaths,
    )
    assert a.ok, a.failure
    assert "--seed 12" in sc.repro(12)
