"""Benchmark: how fast mDNS discovery sees a node arrive and leave, between network namespaces.

    .venv/bin/python -m bench.discovery [--trials 20] [--cut-trials 20] [--no-write]  # root

Two hosts of the namespace test bed (``tests/netns``) on one bridge. An observer runs the
discovery-only driver on h0 for the whole run; each trial starts a fresh node (new node id) on
h1 and stops it cleanly. Measured per trial, with ``time.monotonic()`` (one clock for every
process on the machine):

- **start → visible**: from the subject's discovery start (``registering``) to the observer
  decoding it as a candidate (``found``); also from process spawn, which adds interpreter start;
- **leave → gone**: from the subject's clean stop (``stopping``) to the observer's ``goodbye``.

Side by side: the default (probe for a name clash first, RFC 6762, ~1 s) and ``probe = false``.
Targets from issue 7: start → visible ≤ 1.5 s, leave → gone ≤ 1.5 s (95th percentile here).

Then **cut → dead**: three hosts run the mesh layers met by mDNS alone
(``tests/netns/mesh_driver.py``, SWIM ``lan()`` preset); each trial isolates the third host with
nftables and measures until the other two see it dead, and until it sees them dead (mDNS
reports nothing of a cut: this is SWIM's work), then heals and waits for one mesh again.
Needs root, ``ip``, ``nft`` and ``tc``; writes its section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.report import percentile, write_section
from tests.mesh.swim_cluster import make_states
from tests.netns.bed import NetBed, unavailable_reason
from tests.netns.drivers import start_driver, start_mesh_driver
from tests.netns.procs import Line

TARGET_S = 1.5
COMMAND = ".venv/bin/python -m bench.discovery --trials 20 --cut-trials 20  # as root"


@dataclass
class Series:
    """One configuration's samples, in seconds."""

    name: str
    probe: bool
    visible: list[float] = field(default_factory=list)
    visible_from_spawn: list[float] = field(default_factory=list)
    gone: list[float] = field(default_factory=list)


def _is(event: str, node: str) -> Callable[[Line], bool]:
    return lambda line: line.get("event") == event and line.get("node") == node


def _event(name: str) -> Callable[[Line], bool]:
    return lambda line: line.get("event") == name


def run(trials: int) -> list[Series]:
    series = [Series("probe (default)", probe=True), Series("probe = false", probe=False)]
    mesh = uuid.uuid4().hex[:16]
    with NetBed(2) as bed:
        observer_host, subject_host = bed.hosts
        observer = start_driver(bed, observer_host, uuid.uuid4().hex[:16], mesh)
        observer.wait_for(_event("started"))
        for trial in range(trials):
            for s in series:  # interleaved, so drift in machine load hits both alike
                node = uuid.uuid4().hex[:16]
                spawned = time.monotonic()
                subject = start_driver(bed, subject_host, node, mesh, probe=s.probe)
                registering: Line = subject.wait_for(_event("registering"))
                subject.wait_for(_event("started"))
                found = observer.wait_for(_is("found", node))
                subject.send("stop")
                stopping = subject.wait_for(_event("stopping"))
                gone = observer.wait_for(_is("goodbye", node))
                if subject.stop() != 0:
                    raise RuntimeError(f"subject exited badly\n{subject.describe()}")
                s.visible.append(found["t"] - registering["t"])
                s.visible_from_spawn.append(found["t"] - spawned)
                s.gone.append(gone["t"] - stopping["t"])
            print(f"trial {trial + 1}/{trials} done", file=sys.stderr, flush=True)
        observer.stop()
    return series


@dataclass
class CutSeries:
    """Seconds from the cut until the victim is dead in both other views / they are in its."""

    others_see_dead: list[float] = field(default_factory=list)
    victim_sees_dead: list[float] = field(default_factory=list)
    healed: list[float] = field(default_factory=list)


def _view_has(status: str, nodes: list[str]) -> Callable[[Line], bool]:
    return lambda line: line.get("event") == "view" and set(nodes) <= set(line.get(status, []))


def run_cut(trials: int, seed: int) -> CutSeries:
    out = CutSeries()
    with tempfile.TemporaryDirectory(prefix="moltmesh-bench-") as tmp:
        states = asyncio.run(make_states(Path(tmp), 3))
        ids = [s.node_id for s in states]
        with NetBed(3) as bed:
            procs = []
            for i, state in enumerate(states):
                proc = start_mesh_driver(
                    bed, bed.hosts[i], state.data_dir, expect_peers=min(i, 1), seed=seed + i,
                    preset="lan",
                )  # fmt: skip
                proc.wait_for(_event("swim-started"), 60)
                procs.append(proc)
            for i, proc in enumerate(procs):
                proc.wait_for(_view_has("alive", [n for n in ids if n != ids[i]]), 60)
            victim = bed.hosts[2]
            for trial in range(trials):
                marks = [p.mark() for p in procs]
                cut_at = time.monotonic()
                bed.partition([victim], bed.hosts[:2])
                seen = [procs[i].wait_for(_view_has("dead", [ids[2]]), 120, marks[i])["t"]
                        for i in (0, 1)]  # fmt: skip
                own = procs[2].wait_for(_view_has("dead", ids[:2]), 120, marks[2])["t"]
                out.others_see_dead.append(max(seen) - cut_at)
                out.victim_sees_dead.append(own - cut_at)
                marks = [p.mark() for p in procs]
                healed_at = time.monotonic()
                bed.heal_all()
                back = [
                    procs[i].wait_for(_view_has("alive", [n for n in ids if n != ids[i]]), 120,
                                      marks[i])["t"]
                    for i in range(3)
                ]  # fmt: skip
                out.healed.append(max(back) - healed_at)
                print(f"cut trial {trial + 1}/{trials} done", file=sys.stderr, flush=True)
            for proc in procs:
                proc.stop()
    return out


def _row(label: str, values: list[float], target: float | None) -> str:
    p50, p95 = percentile(values, 50), percentile(values, 95)
    verdict = "" if target is None else ("met" if p95 <= target else "MISSED")
    return (
        f"| {label} | {len(values)} | {p50 * 1000:.0f} | {p95 * 1000:.0f} | "
        f"{max(values) * 1000:.0f} | {verdict} |"
    )


def report(series: list[Series], cut: CutSeries | None) -> str:
    lines = [
        "Two namespaces on one bridge; discovery-only driver processes "
        "(`tests/netns/discovery_driver.py`), `interfaces = all` inside each namespace. "
        "Times in ms; target ≤ 1500 ms judged on the 95th percentile.",
        "",
        "| measure | trials | p50 | p95 | max | target |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for s in series:
        lines.append(_row(f"start → visible, {s.name}", s.visible, TARGET_S))
        lines.append(_row(f"spawn → visible, {s.name}", s.visible_from_spawn, None))
        lines.append(_row(f"leave → gone, {s.name}", s.gone, TARGET_S))
    probe, fast = series
    ratio = percentile(probe.visible, 50) / percentile(fast.visible, 50)
    lines += [
        "",
        f"Probing for a name clash makes start → visible {ratio:.1f}× slower (p50) than "
        "`probe = false`; it is the default because a copied data directory (a cloned SD card) "
        "would otherwise put two devices under one node id. Spawn → visible adds the Python "
        "interpreter and imports. Leave → gone is the goodbye of a clean stop; a cut link "
        "produces no goodbye at all: SWIM detects it (below).",
    ]
    if cut is not None:
        lines += [
            "",
            "**Cut → dead by SWIM** (`lan()` preset: probe every 1 s, probe timeout 0.5 s, "
            "suspicion ×4), three hosts met by mDNS alone, the third isolated by nftables on both "
            "sides; times from the cut (or the heal) to the last view that shows it. With 3 "
            "members there are no independent confirmations to wait for, so a suspicion lasts "
            "its minimum, 4 × max(1, log10 3) × 1 s = 4 s, after the failed probe that raised it. "
            "The isolated node's own view is slower: every probe it sends fails, which raises "
            "its Lifeguard health score and stretches its probe interval and timeouts (up to "
            "×8), and it must fail a probe of each peer in turn. "
            "Heal → one mesh is the isolated node rejoining through its mDNS-given seeds "
            "(retried every 2 s while it knows no live member) and refuting its death. Times in "
            "ms; the issue sets no target for these.",
            "",
            "| measure | trials | p50 | p95 | max | target |",
            "|---|---:|---:|---:|---:|---|",
            _row("cut → isolated node dead in both other views", cut.others_see_dead, None),
            _row("cut → both others dead in the isolated node's view", cut.victim_sees_dead, None),
            _row("heal → one mesh again in every view", cut.healed, None),
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--no-write", action="store_true", help="print, do not update the doc")
    parser.add_argument("--cut-trials", type=int, default=20, help="0 skips cut → dead")
    parser.add_argument("--seed", type=int, default=None, help="SWIM seed (default: random)")
    args = parser.parse_args(argv)
    reason = unavailable_reason()
    if reason is not None:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    seed = random.randrange(2**32) if args.seed is None else args.seed
    print(f"seed {seed}", file=sys.stderr)
    series = run(args.trials)
    cut = run_cut(args.cut_trials, seed) if args.cut_trials else None
    body = report(series, cut)
    print(body)
    if not args.no_write:
        write_section("discovery", "Discovery (mDNS) and cut → dead (SWIM) between namespaces",
                      COMMAND, body)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
