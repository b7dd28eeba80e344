"""The Raft log's fsync floor on this disk: appending to a file (the layout before preallocation)
against writing into zeros the file already holds (``moltmesh.raft.wal``'s preallocated tail),
with 1 and 3 writers at once (the 3 processes of a local group), side by side in one run.

Each writer is a process of its own with its own file in one temporary directory on the file
system of the repository (where the benchmarks' data directories live): it writes a 9 KB
record (about one Ready's worth of 64 entries) and ``fdatasync``s it, ``--writes`` times, with a
1 ms pause between writes (a Ready loop is not a tight loop). Rounds interleave the two
layouts; figures are medians of the writers' p50 over the rounds, and the ratio is taken per
round. An append changes the file's size, so its ``fdatasync`` must also commit the file
system's metadata (on ext4, a journal commit); an overwrite of written zeros flushes data only.

    python bench/wal_fsync.py [--writes 300] [--rounds 3] [--no-write]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import write_section
from moltmesh.raft.wal import PREALLOCATE_BYTES

RECORD = b"r" * 9000
LAYOUTS = ("append", "preallocated")


def writer(layout: str, directory: str, writes: int, out: mp.Queue) -> None:  # type: ignore[type-arg]
    """One writer: its p50 and p99 fdatasync time in ms, put on ``out``."""
    path = os.path.join(directory, f"log-{os.getpid()}")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        if layout == "preallocated":
            os.write(fd, bytes(max(PREALLOCATE_BYTES, len(RECORD) * writes)))
            os.fsync(fd)
        times = []
        for i in range(writes):
            os.pwrite(fd, RECORD, i * len(RECORD))
            t0 = time.perf_counter()
            os.fdatasync(fd)
            times.append(time.perf_counter() - t0)
            time.sleep(0.001)
    finally:
        os.close(fd)
    times.sort()
    out.put((times[len(times) // 2] * 1e3, times[int(len(times) * 0.99)] * 1e3))


def run(layout: str, writers: int, writes: int, directory: str) -> tuple[float, float]:
    """Median over ``writers`` concurrent writers of their p50 and p99 (ms)."""
    out: mp.Queue = mp.Queue()  # type: ignore[type-arg]
    procs = [mp.Process(target=writer, args=(layout, directory, writes, out))
             for _ in range(writers)]  # fmt: skip
    for p in procs:
        p.start()
    results = [out.get(timeout=300) for _ in procs]
    for p in procs:
        p.join()
    return statistics.median(r[0] for r in results), statistics.median(r[1] for r in results)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--writes", type=int, default=300, help="fdatasyncs per writer and cell")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md")
    args = ap.parse_args()
    root = Path(__file__).resolve().parent.parent
    cells: dict[tuple[str, int], list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory(dir=root) as directory:
        for r in range(args.rounds):
            for writers in (1, 3):
                for layout in LAYOUTS if r % 2 == 0 else LAYOUTS[::-1]:
                    got = run(layout, writers, args.writes, directory)
                    cells.setdefault((layout, writers), []).append(got)
                    print(f"round {r + 1}/{args.rounds} {layout:12} {writers} writer(s): "
                          f"p50 {got[0]:.3f} ms, p99 {got[1]:.3f} ms", flush=True)  # fmt: skip
    lines = [
        "| writers at once | append p50 | append p99 | preallocated p50 | preallocated p99 "
        "| preallocated / append (p50, median of rounds) |",
        "|---|---|---|---|---|---|",
    ]
    for writers in (1, 3):
        a, p = cells[("append", writers)], cells[("preallocated", writers)]
        ratio = statistics.median(pp[0] / aa[0] for aa, pp in zip(a, p, strict=True))
        med = [statistics.median(x[i] for x in c) for c in (a, p) for i in (0, 1)]
        lines.append(f"| {writers} | {med[0]:.3f} ms | {med[1]:.3f} ms | {med[2]:.3f} ms | "
                     f"{med[3]:.3f} ms | {ratio:.2f}× |")  # fmt: skip
    body = "\n".join(lines) + (
        f"\n\n{args.writes} writes of {len(RECORD)} bytes per writer and cell, each followed by "
        f"`fdatasync` and a 1 ms pause; {args.rounds} rounds, the layouts interleaved. Load "
        f"average (1 min) {os.getloadavg()[0]:.1f} at the end, on {os.cpu_count()} cores."
    )
    print(body)
    if not args.no_write:
        cmd = "python bench/wal_fsync.py " + " ".join(sys.argv[1:])
        write_section("wal_fsync", "Raft log: fsync of an append vs of a preallocated tail",
                      cmd.strip(), body)  # fmt: skip


if __name__ == "__main__":
    main()
