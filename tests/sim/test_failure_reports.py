"""A failing run names its seed and the exact command that reproduces it; bugs are caught."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from consensus.errors import LocalProtocolError
from consensus.storage import MemoryStorage
from sim.raft_run import build, run_raft
from sim.scenario import FaultSpec, LinkSpec, Phase, Scenario, preset

ROOT = Path(__file__).resolve().parents[2]

IMPOSSIBLE = """
name = "impossible"
nodes = 3

[[phases]]
kind = "safety"
duration_ms = 500.0

[[phases]]
kind = "liveness"
duration_ms = 1.0
link = { delay_ms = 50.0, jitter_ms = 0.0 }
"""


def test_liveness_failure_prints_seed_and_repro_command(tmp_path: Path) -> None:
    f = tmp_path / "impossible.toml"
    f.write_text(IMPOSSIBLE)
    cmd = [sys.executable, "-m", "sim", "raft", "--seed", "17", "--scenario-file", str(f)]
    cmd += ["--nodes", "3"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "liveness failure" in out.stdout
    assert "seed: 17" in out.stdout
    assert f"python -m sim raft --seed 17 --scenario-file {f} --nodes 3" in out.stdout


def test_run_result_carries_the_repro_command() -> None:
    sc = Scenario(
        "tight",
        3,
        (Phase("safety", 100.0), Phase("liveness", 1.0, link=LinkSpec(delay_ms=50.0))),
    )
    res = run_raft(sc, 5)
    assert not res.ok and res.failure is not None
    assert "python -m sim raft --seed 5 --scenario tight --nodes 3" in res.failure


class AmnesiaCrash:
    """A broken disk: a crash loses everything (fsync that lies)."""

    def __call__(self, node_id: str, disk: MemoryStorage) -> MemoryStorage:
        return MemoryStorage(conf_state=disk.conf_state)


@pytest.mark.parametrize("seed", range(3))
def test_a_disk_that_forgets_on_crash_is_caught(seed: int) -> None:
    """Losing persisted votes and entries on crash breaks Raft; the checkers must notice."""
    from sim.errors import InvariantViolation
    from sim.faults import FaultInjector
    from sim.kernel import derive_rng
    from sim.raft_run import CONFIGS

    sc = preset("crashes", 3)
    caught = 0
    for s in range(seed * 10, seed * 10 + 10):
        cluster, _checker, clients = build(sc, s, CONFIGS["lan"]())
        cluster.adapter.crash = AmnesiaCrash()  # type: ignore[method-assign]
        inj = FaultInjector(
            cluster,
            FaultSpec(crash_every_ms=300.0, downtime_ms=(10.0, 200.0)),
            derive_rng(s, "faults"),
        )
        try:
            cluster.start()
            clients.start()
            inj.start()
            cluster.run_for(20_000_000)
        except (InvariantViolation, LocalProtocolError):
            caught += 1  # our checkers, or the core's own invariant assertions
            break
    assert caught >= 1, f"seeds {seed * 10}..{seed * 10 + 9}: amnesia never caught"
