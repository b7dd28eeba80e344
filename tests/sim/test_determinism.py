"""Same seed, same trace, bit for bit — across processes with different PYTHONHASHSEED."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sim.raft_run import run_raft
from sim.scenario import preset

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 100


def trace_hash_in_subprocess(hashseed: str, seed: int) -> str:
    env = {**os.environ, "PYTHONHASHSEED": hashseed}
    cmd = [sys.executable, "-m", "sim", "raft", "--seed", str(seed), "--scenario", "chaos"]
    cmd += ["--nodes", "5", "--wire", "--trace-hash"]
    out = subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT_S, check=False
    )
    assert out.returncode == 0, f"seed={seed}\n{out.stdout}\n{out.stderr}"
    return out.stdout.strip()


def test_same_seed_same_trace_hash_whatever_pythonhashseed() -> None:
    seed = 42
    a = trace_hash_in_subprocess("0", seed)
    b = trace_hash_in_subprocess("4242", seed)
    assert len(a) == 32 and a == b, f"seed={seed}: {a} != {b}"


def test_same_seed_same_trace_in_process_and_seeds_differ() -> None:
    sc = preset("chaos", 3)
    a, b, c = run_raft(sc, 7), run_raft(sc, 7), run_raft(sc, 8)
    assert a.trace_hash == b.trace_hash and a.events == b.events
    assert a.trace_hash != c.trace_hash
