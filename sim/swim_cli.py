"""The ``swim`` subcommand of ``python -m sim``.

- ``python -m sim swim --seed 7 --nodes 50 --loss 0.02`` runs one seed and prints its outcome
  (exit status 1 on failure, with the command that reproduces it);
- ``python -m sim swim --seeds 0:10000 --workers 2`` sweeps seeds and reports the false-death
  rate (runs with any false death, false deaths per member-hour) and convergence after healing.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys

from rich.console import Console
from rich.table import Table

from .sweep import parse_seeds, sweep
from .swim_scenario import CONFIGS, SwimRunResult, SwimScenario, run_swim


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("swim", help="run SWIM clusters under loss, stalls and partitions")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--seed", type=int, help="run one seed")
    g.add_argument("--seeds", help="sweep seeds: 0:10000, or 1,5,9")
    p.add_argument("--nodes", type=int, default=20)
    p.add_argument("--config", choices=sorted(CONFIGS), default="lan", help="SWIM preset")
    p.add_argument("--no-lifeguard", action="store_true", help="plain SWIM (Lifeguard off)")
    p.add_argument("--loss", type=float, default=0.02, help="packet loss probability")
    p.add_argument("--seconds", type=float, default=30.0, help="virtual seconds under faults")
    p.add_argument("--stall-fraction", type=float, default=0.0, help="members that stall")
    p.add_argument(
        "--anomaly",
        choices=("stall", "blocked", "slow"),
        default="stall",
        help="how those members misbehave: paused, receive path blocked, or reading late",
    )
    p.add_argument("--partition", type=float, default=0.0, help="split in two for N seconds")
    p.add_argument("--workers", type=int, default=1)
    p.set_defaults(func=run)


def scenario_of(args: argparse.Namespace) -> SwimScenario:
    return SwimScenario(
        nodes=args.nodes,
        config=args.config,
        lifeguard=not args.no_lifeguard,
        loss=args.loss,
        seconds=args.seconds,
        stall_fraction=args.stall_fraction,
        anomaly=args.anomaly,
        partition_s=args.partition,
    )


def run(args: argparse.Namespace) -> int:
    sc = scenario_of(args)
    if not args.seeds:
        res = run_swim(sc, args.seed if args.seed is not None else 0)
        if not res.ok:
            print(res.failure)
            return 1
        print(
            f"seed {res.seed} ok nodes={sc.nodes} false_deaths={res.false_deaths} "
            f"stalled_deaths={res.stalled_deaths} suspicions={res.suspicions} "
            f"converged_after_heal={res.converge_s:.1f}s events={res.events} "
            f"sim={res.sim_s:.1f}s wall={res.wall_s:.2f}s trace={res.trace_hash}"
        )
        return 0
    seeds = parse_seeds(args.seeds)
    fn = functools.partial(run_swim, sc)
    results = sweep(fn, seeds, args.workers, label=f"swim n={sc.nodes}")
    Console(width=None if sys.stdout.isatty() else 160).print(summary_table(sc, results))
    return 0 if all(r.ok for r in results) else 1


def summary_table(sc: SwimScenario, results: list[SwimRunResult]) -> Table:
    """One row: seeds, failures, the false-death rate, convergence after heal, speed."""
    t = Table(title=f"swim sweep: {sc.repro(0).replace('--seed 0 ', '')}")
    cols = (
        "seeds",
        "failed",
        "failing seeds",
        "runs with a false death",
        "false deaths",
        "per member-hour",
        "stalled deaths",
        "heal→converged p50 s",
        "max s",
        "node-s / wall s",
    )
    for col in cols:
        t.add_column(col, justify="right")
    bad = [r.seed for r in results if not r.ok]
    fd = sum(r.false_deaths for r in results)
    with_fd = sum(1 for r in results if r.false_deaths)
    conv = [r.converge_s for r in results if r.converge_s is not None]
    member_hours = len(results) * sc.nodes * sc.seconds / 3600
    wall = sum(r.wall_s for r in results) or 1e-9
    t.add_row(
        str(len(results)),
        str(len(bad)),
        ",".join(map(str, bad[:8])) + ("…" if len(bad) > 8 else ""),
        f"{with_fd} ({with_fd / len(results):.2%})",
        str(fd),
        f"{fd / member_hours:.4f}" if member_hours else "-",
        str(sum(r.stalled_deaths for r in results)),
        f"{statistics.median(conv):.1f}" if conv else "-",
        f"{max(conv):.1f}" if conv else "-",
        f"{sum(r.sim_s for r in results) * sc.nodes / wall:,.0f}",
    )
    return t
