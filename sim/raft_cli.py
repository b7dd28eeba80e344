"""The ``raft`` subcommand of ``python -m sim``.

- ``python -m sim raft --seed 7 --scenario chaos --nodes 5`` runs one seed and prints its
  outcome and trace hash (exit status 1 on failure, with the reproduce command);
- ``python -m sim raft --seeds 0:1000 --nodes 5 --workers 2`` sweeps seeds (every preset unless
  ``--scenario`` is given) and prints a summary table.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import tomllib
from pathlib import Path

from rich.console import Console
from rich.table import Table

from .raft_run import CONFIGS, RaftRunResult, run_raft
from .scenario import PRESETS, Scenario, preset
from .sweep import parse_seeds, sweep


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("raft", help="run Raft clusters under faults and check them")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--seed", type=int, help="run one seed")
    g.add_argument("--seeds", help="sweep seeds: 0:1000, or 1,5,9")
    p.add_argument("--scenario", choices=PRESETS, action="append", help="preset (repeatable)")
    p.add_argument("--scenario-file", help="a TOML scenario file")
    p.add_argument("--nodes", type=int, help="cluster size (default: the file's, or 5)")
    p.add_argument("--config", choices=sorted(CONFIGS), default="lan", help="Raft preset")
    p.add_argument("--wire", action="store_true", help="pass messages through the codec")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--trace-hash", action="store_true", help="print only the trace hash")
    p.set_defaults(func=run)


def load_scenarios(args: argparse.Namespace) -> list[tuple[Scenario, str | None]]:
    """The scenarios the arguments name, each with the file it came from (if any)."""
    if args.scenario_file:
        with open(args.scenario_file, "rb") as f:
            sc = Scenario.from_dict(tomllib.load(f))
        sc = sc.replace(nodes=args.nodes or sc.nodes, wire=args.wire or sc.wire)
        return [(sc, str(Path(args.scenario_file)))]
    names = args.scenario or (["chaos"] if args.seed is not None else list(PRESETS))
    return [(preset(n, args.nodes or 5).replace(wire=args.wire), None) for n in names]


def _one(scenario: Scenario, config: str, source: str | None, seed: int) -> RaftRunResult:
    return run_raft(scenario, seed, config=config, source=source)


def run(args: argparse.Namespace) -> int:
    console = Console(width=None if sys.stdout.isatty() else 160)
    scenarios = load_scenarios(args)
    if args.seed is not None or not args.seeds:
        seed = args.seed if args.seed is not None else 0
        sc, src = scenarios[0]
        res = run_raft(sc, seed, config=args.config, source=src)
        if args.trace_hash:
            print(res.trace_hash)
            return 0 if res.ok else 1
        if not res.ok:
            print(res.failure)
            return 1
        print(
            f"seed {seed} ok scenario={sc.name} nodes={sc.nodes} "
            f"events={res.events} sim={res.sim_s:.1f}s wall={res.wall_s:.2f}s "
            f"acked={res.acked} crashes={res.crashes} partitions={res.partitions} "
            f"leader_after_heal={res.leader_after_heal_ms}ms "
            f"commit_after_heal={res.commit_after_heal_ms}ms trace={res.trace_hash}"
        )
        return 0
    seeds = parse_seeds(args.seeds)
    rows = []
    any_failed = False
    for sc, src in scenarios:
        fn = functools.partial(_one, sc, args.config, src)
        results = sweep(fn, seeds, args.workers, label=f"raft {sc.name} n={sc.nodes}")
        any_failed |= not all(r.ok for r in results)
        rows.append((sc, results))
    console.print(summary_table(rows))
    return 1 if any_failed else 0


def summary_table(rows: list[tuple[Scenario, list[RaftRunResult]]]) -> Table:
    """One row per scenario: seeds, failures, faults, acknowledgements, recovery, speed."""
    t = Table(title="raft simulation sweep")
    for col in (
        "scenario",
        "nodes",
        "seeds",
        "failed",
        "failing seeds",
        "crashes",
        "partitions",
        "acked",
        "heal→commit p50 ms",
        "heal→commit max ms",
        "events/wall s",
    ):
        t.add_column(col, justify="right")
    for sc, results in rows:
        bad = [r.seed for r in results if not r.ok]
        heal = [r.commit_after_heal_ms for r in results if r.commit_after_heal_ms is not None]
        wall = sum(r.wall_s for r in results) or 1e-9
        t.add_row(
            sc.name,
            str(sc.nodes),
            str(len(results)),
            str(len(bad)),
            ",".join(map(str, bad[:8])) + ("…" if len(bad) > 8 else ""),
            str(sum(r.crashes for r in results)),
            str(sum(r.partitions for r in results)),
            str(sum(r.acked for r in results)),
            f"{statistics.median(heal):.0f}" if heal else "-",
            f"{max(heal):.0f}" if heal else "-",
            f"{sum(r.events for r in results) / wall:,.0f}",
        )
    return t
