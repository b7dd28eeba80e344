"""``python -m sim.kv_cli``: run replicated-KV simulator seeds (one, or a range) and report.

    python -m sim.kv_cli --seed 7 --scenario mixed --voters 3      # one seed, full report
    python -m sim.kv_cli --seeds 0-999 --scenario mixed             # a sweep; failures listed

Exit status 1 when any seed fails; each failure prints its seed and the command reproducing it.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence

from .kv_run import KV_PRESETS, KvRunResult, kv_preset, run_kv


def _seeds(text: str) -> list[int]:
    if "-" in text:
        lo, hi = text.split("-", 1)
        return list(range(int(lo), int(hi) + 1))
    return [int(text)]


def _line(r: KvRunResult) -> str:
    return (
        f"seed {r.seed:>6} {r.scenario:<10} {'ok' if r.ok else 'FAIL':<4} "
        f"ops {r.operations:>4} unknown {r.unknown:>3} crashes {r.crashes:>2} "
        f"cuts {r.partitions:>2} conf {r.conf_changes:>2} snaps {r.snapshots_taken:>3}/"
        f"{r.snapshots_installed:<2} check {r.check_s * 1000:7.1f} ms  wall {r.wall_s:5.2f} s"
    )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sim.kv_cli", description=__doc__)
    p.add_argument("--seed", type=int, help="one seed")
    p.add_argument("--seeds", help="a range of seeds, e.g. 0-299")
    p.add_argument("--scenario", default="mixed", choices=KV_PRESETS)
    p.add_argument("--voters", type=int, default=3)
    p.add_argument("--wire", action="store_true", help="encode/decode every Raft message")
    args = p.parse_args(argv)
    seeds = [args.seed] if args.seed is not None else _seeds(args.seeds or "0")
    scenario = kv_preset(args.scenario, args.voters)
    if args.wire:
        scenario = dataclasses.replace(scenario, wire=True)
    failed = 0
    for seed in seeds:
        r = run_kv(scenario, seed)
        print(_line(r), flush=True)
        if not r.ok:
            failed += 1
            print(r.failure, flush=True)
    print(f"{len(seeds) - failed}/{len(seeds)} seeds passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
