"""An idle mesh of real ``moltmesh node`` processes: per-node CPU and bytes per second, and the
time from ``kill -9`` of one node to "dead" in every other view — with the LAN presets.

Side by side in one run: the mesh nodes' idle CPU against one idle node without a mesh (the
difference is the cost of membership itself; an idle node alone is near 0, so no ratio), and the
measured detection time against Lifeguard's bounds for the preset (minimum and maximum suspicion
timeout after the failed probe).

    python bench/mesh_swim.py [--nodes 5] [--window 20] [--preset lan] [--no-write]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil

from bench.report import write_section
from consensus.swim_config import lan, local, wan
from moltmesh.mesh import store
from tests.integration.nodeproc import NodeProcess, run_cli, running_node

PRESETS = {"lan": lan, "wan": wan, "local": local}
FLAGS = ("--no-bundled-models", "--mesh-host", "127.0.0.1", "--mesh-port", "0",
         "--log-level", "warning")  # fmt: skip


def view(data_dir: Path) -> dict[str, str]:
    try:
        doc = json.loads(run_cli("status", "--data-dir", str(data_dir), "--json"))
    except RuntimeError:
        return {}
    return {m["node"]: m["status"] for m in doc["members"]}


def mesh_bytes(node: NodeProcess) -> float:
    req = urllib.request.Request(
        f"{node.url}/metrics", headers={"Authorization": f"Bearer {node.token}"}
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        text = resp.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("moltmesh_mesh_bytes_total"))  # fmt: skip


def cpu_seconds(node: NodeProcess) -> float:
    t = psutil.Process(node.proc.pid).cpu_times()
    return t.user + t.system


def measure(nodes: int, window: float, preset: str) -> dict[str, float]:
    env = {"MOLTMESH_MESH_SWIM": preset}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        dirs = [Path(tmp) / f"n{i}" for i in range(nodes)]
        run_cli("mesh", "init", "--data-dir", str(dirs[0]))
        procs = [stack.enter_context(running_node(dirs[0], *FLAGS, env=env))]
        seed = (store.mesh_dir(dirs[0]) / "stream-address").read_text().strip()
        for d in dirs[1:]:
            token = run_cli("mesh", "token", "--data-dir", str(dirs[0])).strip()
            procs.append(stack.enter_context(
                running_node(d, *FLAGS, "--token", token, "--seed", seed, env=env)
            ))  # fmt: skip
        alone = stack.enter_context(running_node(Path(tmp) / "alone", "--no-bundled-models"))
        ids = [store.load(d).node_id for d in dirs]
        while not all(sum(s == "alive" for s in view(d).values()) == nodes for d in dirs):
            pass  # each status call is one observation of every view
        cpu0 = [cpu_seconds(p) for p in [*procs, alone]]
        bytes0 = [mesh_bytes(p) for p in procs]
        t0 = time.monotonic()
        time.sleep(window)  # the measurement window itself (an idle mesh, nothing to wait for)
        elapsed = time.monotonic() - t0
        cpu = [(cpu_seconds(p) - c) / elapsed for p, c in zip([*procs, alone], cpu0, strict=True)]
        rates = [(mesh_bytes(p) - b) / elapsed for p, b in zip(procs, bytes0, strict=True)]

        victim = procs[-1]
        others = dirs[:-1]
        killed_at = time.monotonic()
        victim.stop(signal.SIGKILL)
        first_dead = None
        while True:
            views = [view(d) for d in others]
            dead = [v.get(ids[-1]) == "dead" for v in views]
            if any(dead) and first_dead is None:
                first_dead = time.monotonic() - killed_at
            if all(dead):
                break
        all_dead = time.monotonic() - killed_at
    mesh_cpu = cpu[:-1]
    return {
        "cpu_mesh_mean": sum(mesh_cpu) / len(mesh_cpu), "cpu_mesh_max": max(mesh_cpu),
        "cpu_alone": cpu[-1], "bytes_mean": sum(rates) / len(rates), "bytes_max": max(rates),
        "first_dead_s": first_dead or all_dead, "all_dead_s": all_dead,
    }  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=5)
    ap.add_argument("--window", type=float, default=20.0, help="idle measurement, seconds")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="lan")
    ap.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md")
    args = ap.parse_args()
    os.environ.setdefault("MOLTMESH_LOG_LEVEL", "warning")

    r = measure(args.nodes, args.window, args.preset)
    cfg = PRESETS[args.preset]()
    n = args.nodes
    min_suspicion = cfg.suspicion_mult * max(1.0, math.log10(n)) * cfg.probe_interval / 1e6
    max_suspicion = min_suspicion * cfg.suspicion_max_timeout_mult
    probe = cfg.probe_interval / 1e6
    lines = [
        "| figure | value |", "|---|---|",
        f"| CPU per mesh node, idle (mean / max) | {r['cpu_mesh_mean'] * 100:.2f} % / "
        f"{r['cpu_mesh_max'] * 100:.2f} % of one core |",
        f"| CPU of one idle node without a mesh | {r['cpu_alone'] * 100:.2f} % of one core |",
        f"| CPU added by membership (mesh mean − alone) | "
        f"{(r['cpu_mesh_mean'] - r['cpu_alone']) * 100:.2f} % of one core |",
        f"| mesh bytes per node (in + out, UDP + TCP; mean / max) | {r['bytes_mean']:.0f} / "
        f"{r['bytes_max']:.0f} B/s |",
        f"| kill -9 → dead in the first view | {r['first_dead_s']:.1f} s |",
        f"| kill -9 → dead in every view | {r['all_dead_s']:.1f} s |",
        f"| Lifeguard bounds ({args.preset}, n = {n}): probe + min / max suspicion | "
        f"{probe + min_suspicion:.1f} s / {probe + max_suspicion:.1f} s |",
    ]  # fmt: skip
    print("\n".join(lines))
    if not args.no_write:
        body = (
            f"{n} real `moltmesh node` processes on loopback (no models loaded), SWIM preset "
            f"`{args.preset}`, joined by token and seed; an idle window of {args.window:.0f} s "
            "(CPU from the processes' CPU times, bytes from `moltmesh_mesh_bytes_total`), then "
            "`kill -9` of one node, with every other view read by `moltmesh status` until it "
            "says dead. A fresh suspicion lasts the maximum timeout until other members "
            "confirm it (Lifeguard), so detection lands between the two bounds.\n\n"
            + "\n".join(lines)
            + "\n"
        )
        write_section(
            "mesh_swim", "Idle mesh cost and failure detection (real processes)",
            f"python bench/mesh_swim.py --nodes {n} --window {args.window:.0f} "
            f"--preset {args.preset}", body,
        )  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
