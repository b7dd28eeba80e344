"""Where the CPU of a Raft commit goes: py-spy samples of the in-process leader and of one
follower under ``bench/raft_mesh.py``'s throughput load (3 processes, 64 puts in flight).

Each sample (``py-spy --gil``: only a thread holding the GIL) is charged to the first category
whose marker appears anywhere in its stack; the shares are then scaled by the CPU time per
commit each process spent in the same window, so a row reads "µs of this process's CPU per
commit". Native code (uvloop, OpenSSL, the kernel's send path) counts under the Python frame
that called it. The breakdown quoted in docs/benchmarks.md comes from this script.

    python bench/raft_profile.py [--fsync on|off] [--seconds 12] [--rate 1500] [--raw DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import raft_mesh
from bench.serve_profile import py_spy

CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    ("KV snapshot thread", ("Compactor._write", "_WorkItem.run")),
    ("put path (encode the command, propose, future, result; the load's own loop)",
     ("ClusterKv.put", "ClusterKv._write", "kv_load.<locals>.worker", "RaftDriver.propose",
      "RaftDriver.submit", "RaftDriver._flush_proposals")),
    ("apply (decode, KV update, answer)", ("RaftDriver._apply",)),
    ("log records and fsync", ("DiskStorage.prepare", "DiskStorage.write", "DiskStorage.finish")),
    ("message encoding and TLS writes",
     ("RaftDriver._send_grouped", "ClusterKv.send_raft", "_send_commit_notices")),
    ("receiving messages (TLS read, decode, step)",
     ("MeshStreams._serve", "ClusterKv.on_raft", "RaftDriver.step")),
    ("KV watches (mesh config; waking them)",
     ("MeshSync", "ClusterKv.watch", "RaftDriver._notify_changes", "ChangeWaiters")),
]  # fmt: skip
REST = "the rest (event loop, timers, Ready bookkeeping, garbage collection)"


def shares(raw: str) -> dict[str, float]:
    """Share of the samples per category (``py-spy --format raw`` lines: stack, count)."""
    counts: collections.Counter[str] = collections.Counter()
    for line in raw.splitlines():
        stack, _, n = line.rstrip().rpartition(" ")
        if not stack or not n.isdigit():
            continue
        name = next((c for c, keys in CATEGORIES if any(k in stack for k in keys)), REST)
        counts[name] += int(n)
    total = sum(counts.values()) or 1
    return {name: n / total for name, n in counts.items()}


def profiled_load(out_dir: Path, rate: int):  # type: ignore[no-untyped-def]
    """``raft_mesh.kv_load`` with py-spy recording the leader (this process) and the first
    follower for the throughput window."""
    exe = py_spy()
    if exe is None:
        raise SystemExit("py-spy not found (pip install py-spy)")

    async def load(node, requests: int, seconds: float, pids=()):  # type: ignore[no-untyped-def]
        spies = {
            who: subprocess.Popen([exe, "record", "--pid", str(pid), "--gil", "-r", str(rate),
                                   "-d", str(max(1, int(seconds) - 1)), "-f", "raw", "-o",
                                   str(out_dir / f"{who}.txt"), "--nonblocking"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            for who, pid in (("leader", os.getpid()), ("follower", pids[0]))
        }  # fmt: skip
        try:
            return await raft_mesh.kv_load(node, requests, seconds, pids)
        finally:
            for who, spy in spies.items():
                _, err = await asyncio.to_thread(spy.communicate)
                if spy.returncode != 0:
                    raise RuntimeError(f"py-spy on the {who} failed: {err.decode()[-300:]}")

    return load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fsync", choices=["on", "off"], default="on")
    parser.add_argument("--seconds", type=float, default=12.0, help="throughput window")
    parser.add_argument("--rate", type=int, default=1500, help="py-spy samples per second")
    parser.add_argument("--raw", type=Path, help="keep py-spy's raw stacks in this directory")
    args = parser.parse_args()
    from rich.console import Console
    from rich.table import Table

    with tempfile.TemporaryDirectory() as tmp:
        out = args.raw or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        m = raft_mesh.moltmesh_inprocess_load(
            args.fsync == "on", 50, args.seconds, load=profiled_load(out, args.rate)
        )
        got = {who: shares((out / f"{who}.txt").read_text()) for who in ("leader", "follower")}
    cpu = {"leader": m["cpu_us"][0], "follower": m["cpu_us"][1]}  # type: ignore[index]
    table = Table(title=f"CPU per commit, fsync {args.fsync}: {m['ops_s']:,.0f} commits/s under "
                  f"the profiler; leader {cpu['leader']:.0f} µs, follower {cpu['follower']:.0f} "
                  "µs per commit")  # fmt: skip
    table.add_column("category")
    for who in ("leader", "follower"):
        table.add_column(f"{who} %", justify="right")
        table.add_column(f"{who} µs", justify="right")
    names = sorted({*got["leader"], *got["follower"]}, key=lambda n: -got["leader"].get(n, 0))
    for name in names:
        row = [name]
        for who in ("leader", "follower"):
            share = got[who].get(name, 0.0)
            row += [f"{share * 100:.0f}", f"{share * cpu[who]:.1f}"]
        table.add_row(*row)
    Console().print(table)


if __name__ == "__main__":
    main()
