"""Seeded simulator runs of the replicated KV: 3- and 5-voter groups with crashes, partitions,
membership changes (learners joining by snapshot, promotions, removals incl. the leader's),
leadership transfers, snapshots and log compaction during client traffic. Every Raft checker,
the identical-state check and the linearizability check must pass on every seed; a failure
prints the seed and the command that reproduces it."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sim import kv_run
from sim.faults import FaultInjector
from sim.kernel import derive_rng
from sim.kv_adapter import KvAdapter
from sim.kv_clients import KvClients
from sim.kv_run import KV_PRESETS, KvScenario, build, kv_preset, run_kv
from sim.linearizability import Operation, check

ROOT = Path(__file__).resolve().parents[2]
SEEDS = 300


def scenario_for(seed: int) -> KvScenario:
    """Seeds cycle through the presets; one in four runs 5 founding voters; one in seven
    passes every Raft message through the wire codec."""
    sc = kv_preset(KV_PRESETS[seed % len(KV_PRESETS)], 5 if seed % 4 == 3 else 3)
    return dataclasses.replace(sc, wire=seed % 7 == 0)


@pytest.mark.parametrize("seed", range(SEEDS))
def test_kv_seed_passes_every_checker(seed: int) -> None:
    scenario = scenario_for(seed)
    r = run_kv(scenario, seed)
    assert r.ok, f"seed {seed} ({scenario.name}, {scenario.voters} voters) failed:\n{r.failure}"
    assert r.operations > 50, f"seed {seed}: only {r.operations} operations recorded"


def test_faults_and_features_are_really_exercised() -> None:
    """A handful of 'mixed' seeds together crash nodes, cut links, change membership, install
    snapshots on followers and leave operations with unknown outcomes."""
    runs = [run_kv(kv_preset("mixed", 3), seed) for seed in range(1000, 1006)]
    assert all(r.ok for r in runs), [r.failure for r in runs if not r.ok]
    assert sum(r.crashes for r in runs) > 0
    assert sum(r.partitions for r in runs) > 0
    assert sum(r.conf_changes for r in runs) > 0
    assert sum(r.snapshots_installed for r in runs) > 0
    assert sum(r.unknown for r in runs) > 0


def test_same_seed_same_trace() -> None:
    a = run_kv(kv_preset("mixed", 3), 77)
    b = run_kv(kv_preset("mixed", 3), 77)
    assert a.ok and a.trace_hash == b.trace_hash and a.operations == b.operations


def test_trace_does_not_depend_on_hash_seed() -> None:
    code = (
        "from sim.kv_run import kv_preset, run_kv; "
        "print(run_kv(kv_preset('mixed', 3), 5).trace_hash)"
    )
    digests = set()
    for hashseed in ("1", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": hashseed}
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        digests.add(out.stdout.strip())
    assert len(digests) == 1


class LocalReadClients(KvClients):
    """A broken client library: 'linearizable' reads served from any node's local copy."""

    def _linear_read(self, c, key, target):  # type: ignore[no-untyped-def]
        store = self.cluster.nodes[target].app.store
        kv = store.get(key)
        now = self.cluster.now
        result = (kv.value, kv.mod_revision) if kv else (None, 0)
        self.history.append(
            Operation(len(self.history), c.num, "get", key, now, now, result=result)
        )
        self._think(c)


def test_the_harness_catches_reads_that_skip_read_index() -> None:
    """End to end: with reads served locally as if linearizable, partitions make some follower
    answer stale data, and the check at the end of the seed says so (with the seed)."""
    caught = []
    for seed in range(8):
        scenario = kv_preset("partitions", 3)
        h = build(scenario, seed)
        bad = LocalReadClients(h.cluster, scenario.clients, h.clients.rng, None)
        h.cluster.observers.remove(h.clients)
        h.cluster.add_observer(bad)
        h.cluster.start()
        bad.start()
        inj = FaultInjector(h.cluster, scenario.faults, derive_rng(seed, "faults"))
        inj.start()
        h.cluster.run_for(int(scenario.safety_ms * 1000))
        res = check(bad.finish())
        if not res.ok:
            caught.append(seed)
            assert "not linearizable" in res.report()
    assert caught, "stale local reads were never caught in 8 partitioned seeds"


def test_cli_runs_a_seed_and_reports_it(capsys: pytest.CaptureFixture[str]) -> None:
    from sim.cli import main

    assert main(["kv", "--seed", "4", "--scenario", "calm"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("seed 4 ok scenario=calm") and "trace=" in out


class ForgetfulAdapter(KvAdapter):
    """A broken driver: node n1 applies every 7th command as a no-op."""

    def apply(self, node, ready, now):  # type: ignore[no-untyped-def]
        if node.id == "n1":
            committed = [
                dataclasses.replace(e, data=b"") if e.data and e.index % 7 == 0 else e
                for e in ready.committed
            ]
            ready = dataclasses.replace(ready, committed=committed)
        super().apply(node, ready, now)


def test_the_harness_catches_a_replica_that_skips_commands(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """End to end: a replica that silently skips commands fails the seed (its store differs
    from its peers' at the same index, or reads served from it are not linearizable)."""
    monkeypatch.setattr(kv_run, "KvAdapter", ForgetfulAdapter)
    for seed in range(3):
        r = run_kv(kv_preset("calm", 3), seed)
        assert not r.ok, f"seed {seed}: a replica skipping commands went unnoticed"
        assert f"seed: {seed}" in (r.failure or "")
        assert f"python -m sim kv --seed {seed} --scenario calm --voters 3" in (r.failure or "")
