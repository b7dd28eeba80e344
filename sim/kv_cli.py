"""The ``kv`` subcommand of ``python -m sim``: replicated-KV seeds, one or a sweep.

    python -m sim kv --seed 7 --scenario mixed --voters 3        # one seed, one-line outcome
    python -m sim kv --seeds 0:1000 --workers 2                  # sweep every KV preset
    python -m sim kv --seeds 0:200 --scenario crashes --batch-ms 5   # writes share entries

Each seed runs ``sim.kv_run.run_kv``: faults, membership changes, snapshots and client traffic,
then the Raft checkers, the identical-state check and the linearizability check. Exit status 1
when any seed fails; each failure prints its seed and the command reproducing it. The
``batched`` preset (and ``--batch-ms`` on any preset) groups the clients' writes into ``Batch``
entries as the node's Raft driver does.
``python -m sim.kv_cli`` takes the same arguments.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import sys
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from .kv_run import ALL_KV_PRESETS, KvRunResult, KvScenario, kv_preset, run_kv
from .sweep import parse_seeds, sweep


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("kv", help="run the replicated KV under faults; check linearizability")
    _arguments(p)
    p.set_defaults(func=run)


def _arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--seed", type=int, help="run one seed")
    g.add_argument("--seeds", help="sweep seeds: 0:1000, or 1,5,9")
    p.add_argument(
        "--scenario", choices=ALL_KV_PRESETS, action="append", help="preset (repeatable)"
    )
    p.add_argument("--voters", type=int, default=3, help="founding voters (default 3)")
    p.add_argument("--wire", action="store_true", help="encode/decode every Raft message")
    p.add_argument(
        "--batch-ms",
        type=_milliseconds,
        metavar="MS",
        help="hold the clients' writes to one node up to MS virtual ms and propose them "
        "together in Batch entries, grouped like the node's Raft driver does (distinct keys "
        "per entry); 0 proposes each write alone (default: the preset's, 10 for 'batched', "
        "0 for the others)",
    )
    p.add_argument("--workers", type=int, default=1)


def _milliseconds(text: str) -> float:
    """argparse type: a duration in ms, 0 or more."""
    value = float(text)
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {text}")
    return value


def _one(scenario: KvScenario, seed: int) -> KvRunResult:
    return run_kv(scenario, seed)


def line(r: KvRunResult) -> str:
    """A one-line outcome of a seed (with the batches formed, when the writes were batched)."""
    batches = (
        f"batches={r.batch_entries} batched_writes={r.batched_writes} max_batch={r.max_batch} "
        if r.max_batch > 1
        else ""
    )
    return (
        f"seed {r.seed} {'ok' if r.ok else 'FAILED'} scenario={r.scenario} ops={r.operations} "
        f"unknown={r.unknown} crashes={r.crashes} partitions={r.partitions} "
        f"conf_changes={r.conf_changes} snapshots={r.snapshots_taken}/{r.snapshots_installed} "
        f"watch_events={r.watch_events} resyncs={r.watch_resyncs} {batches}"
        f"check={r.check_s * 1000:.1f}ms sim={r.sim_s:.1f}s wall={r.wall_s:.2f}s "
        f"trace={r.trace_hash}"
    )


def scenario_of(name: str, voters: int, wire: bool, batch_ms: float | None) -> KvScenario:
    """The preset ``name`` with the command line's overrides (``batch_ms`` ``None``: keep the
    preset's)."""
    sc = dataclasses.replace(kv_preset(name, voters), wire=wire)
    if batch_ms is not None:
        sc = dataclasses.replace(sc, clients=dataclasses.replace(sc.clients, batch_ms=batch_ms))
    return sc


def run(args: argparse.Namespace) -> int:
    names = args.scenario or (["mixed"] if args.seed is not None else list(ALL_KV_PRESETS))
    scenarios = [scenario_of(n, args.voters, args.wire, args.batch_ms) for n in names]
    if args.seed is not None or not args.seeds:
        r = run_kv(scenarios[0], args.seed if args.seed is not None else 0)
        print(line(r))
        if not r.ok:
            print(r.failure)
        return 0 if r.ok else 1
    seeds = parse_seeds(args.seeds)
    table = Table(title="replicated KV sweep")
    for col in ("scenario", "voters", "seeds", "failed", "failing seeds", "operations",
                "unknown", "crashes", "partitions", "conf changes", "snapshots installed",
                "batches (writes)", "check ms / 1000 ops"):  # fmt: skip
        table.add_column(col, justify="right")
    failed_any = False
    for sc in scenarios:
        fn = functools.partial(_one, sc)
        results = sweep(fn, seeds, args.workers, label=f"kv {sc.name} v={sc.voters}")
        bad = [r.seed for r in results if not r.ok]
        failed_any |= bool(bad)
        ops = sum(r.operations for r in results) or 1
        table.add_row(
            sc.name,
            str(sc.voters),
            str(len(results)),
            str(len(bad)),
            ",".join(map(str, bad[:8])) + ("…" if len(bad) > 8 else ""),
            str(ops),
            str(sum(r.unknown for r in results)),
            str(sum(r.crashes for r in results)),
            str(sum(r.partitions for r in results)),
            str(sum(r.conf_changes for r in results)),
            str(sum(r.snapshots_installed for r in results)),
            f"{sum(r.batch_entries for r in results)} ({sum(r.batched_writes for r in results)})",
            f"{sum(r.check_s for r in results) / ops * 1e6:.1f}",
        )
    Console(width=None if sys.stdout.isatty() else 160).print(table)
    return 1 if failed_any else 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sim.kv_cli", description=__doc__)
    _arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
