"""Seed sweeps (in worker processes) and the ``python -m sim`` command line."""

from __future__ import annotations

import io
from dataclasses import dataclass

import pytest
from rich.console import Console

from sim.cli import build_parser
from sim.sweep import parse_seeds, sweep


@dataclass
class Outcome:
    seed: int
    ok: bool
    failure: str | None


def judge(seed: int) -> Outcome:
    bad = seed % 7 == 3
    return Outcome(seed, not bad, f"seed {seed} is unlucky" if bad else None)


def test_parse_seeds() -> None:
    assert parse_seeds("5") == [5]
    assert parse_seeds("3:6") == [3, 4, 5]
    assert parse_seeds("1,5,9") == [1, 5, 9]
    with pytest.raises(ValueError):
        parse_seeds("6:3")


@pytest.mark.parametrize("workers", [1, 2])
def test_sweep_returns_results_in_seed_order_and_reports_failures(workers: int) -> None:
    out = io.StringIO()
    res = sweep(judge, range(20), workers, console=Console(file=out, width=120))
    assert [r.seed for r in res] == list(range(20))
    assert [r.seed for r in res if not r.ok] == [3, 10, 17]
    assert "seed 3 FAILED" in out.getvalue() and "unlucky" in out.getvalue()


def test_cli_parses_a_sweep_command() -> None:
    args = build_parser().parse_args(
        ["raft", "--seeds", "0:1000", "--nodes", "5", "--workers", "2", "--scenario", "chaos"]
    )
    assert args.seeds == "0:1000" and args.nodes == 5 and args.workers == 2
    assert args.scenario == ["chaos"] and callable(args.func)
