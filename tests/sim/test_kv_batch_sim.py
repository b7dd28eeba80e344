"""Batched KV writes in the simulator: clients' writes grouped into ``Batch`` entries by the
node driver's rules go through partitions, crashes (the leader's included) and leader changes,
and the Raft checkers, the watchers, the identical-state check and the linearizability check
judge them. A client library that misreports a batched write is caught, so the checks are not
vacuous. Every failure names its seed."""

from __future__ import annotations

import dataclasses

import pytest

from consensus.kv import KvStore
from consensus.kv_types import (
    Batch,
    Event,
    decode_command,
)
from sim.cluster import ms
from sim.errors import InvariantViolation
from sim.kv_cli import scenario_of
from sim.kv_clients import KvClients, Pending, leader_of
from sim.kv_run import (
    BATCH_CLIENTS,
    KvHarness,
    KvScenario,
    build,
    finish_run,
    kv_preset,
    repro_command,
    run_kv,
)
from sim.linearizability import Operation, check

SEEDS = (0, 1, 2)


# --- whole runs ------------------------------------------------------------------------------


def test_batched_seeds_pass_every_checker() -> None:
    """Crashes, partitions, membership changes and snapshots, with writes sharing entries."""
    runs = []
    for seed in SEEDS:
        r = run_kv(kv_preset("batched", 3), seed)
        assert r.ok, f"seed {seed} (batched) failed:\n{r.failure}"
        assert r.batch_entries > 20 and r.batches_applied > 10, f"seed {seed}: few batches: {r}"
        assert r.max_batch >= 3, f"seed {seed}: no batch of 3 writes or more ({r.max_batch})"
        runs.append(r)
    assert sum(r.crashes for r in runs) > 0 and sum(r.partitions for r in runs) > 0
    assert sum(r.conf_changes for r in runs) > 0 and sum(r.unknown for r in runs) > 0


SCRIPTED = dataclasses.replace(
    kv_preset("calm", 3), name="batched-script", spares=0, clients=BATCH_CLIENTS
)


def scripted(seed: int, clients: type[KvClients] = KvClients) -> tuple[KvHarness, list[Operation]]:
    """A batched run with scripted faults: the leader is cut off while it holds and proposes
    batches, the network heals, then the new leader crashes with batches in flight and comes
    back; then the usual liveness phase and end-of-run checks (``SimFailure`` if one fails).
    ``clients`` replaces the client library (a subclass of ``KvClients``)."""
    h = build(SCRIPTED, seed)
    c = h.cluster
    if clients is not KvClients:
        c.observers.remove(h.clients)
        h.clients = clients(c, SCRIPTED.clients, h.clients.rng, h.checker)
        c.add_observer(h.clients)
    c.start()
    h.clients.start()
    c.run_for(ms(600))
    first = leader_of(c)
    assert first is not None, f"seed {seed}: no leader after 600 ms"
    c.network.isolate(first.id)
    c.run_for(ms(500))
    c.network.heal()
    c.run_for(ms(400))
    second = leader_of(c)
    assert second is not None, f"seed {seed}: no leader after the heal"
    c.crash(second.id)
    c.run_for(ms(600))
    return h, finish_run(h, SCRIPTED)


@pytest.mark.parametrize("seed", SEEDS[:2])
def test_batches_survive_a_cut_off_leader_and_a_leader_crash(seed: int) -> None:
    h, history = scripted(seed)
    verdict = check(history, SCRIPTED.budget)
    assert verdict.ok, f"seed {seed}: {verdict.report()}"
    b = h.clients.batch_stats
    assert b.batches_applied > 5 and b.max_batch >= 3, f"seed {seed}: {b}"
    assert h.clients.stats.unknown + h.clients.stats.lost > 0, f"seed {seed}: no write was hit"
    assert h.watchers.events > 100, f"seed {seed}: watchers saw {h.watchers.events} events"


def test_same_seed_same_history() -> None:
    (a, history_a), (b, history_b) = scripted(6), scripted(6)
    assert a.cluster.trace.digest() == b.cluster.trace.digest(), "seed 6: two traces"
    assert history_a == history_b, "seed 6: the same seed gave two histories"
    assert a.clients.batch_stats == b.clients.batch_stats
    assert a.clients.batch_stats.batches_applied > 0


# --- the checks catch a client library that gets batches wrong ------------------------------------


class MisnumberedClients(KvClients):
    """A broken client library: the i-th write of a batch is told the entry's index + i, as if
    each command of the entry had a revision of its own."""

    def _complete_write(self, cluster, p: Pending, index: int, res) -> None:  # type: ignore[no-untyped-def]
        if p.entry != p.payload:
            batch = decode_command(p.entry)
            assert isinstance(batch, Batch)
            p.index = index + batch.commands.index(p.payload)
        super()._complete_write(cluster, p, index, res)


class OwnCommandAckClients(KvClients):
    """A broken client library: a batched write is acknowledged to the Raft checker as its own
    command, not the entry that carried it."""

    def _complete_write(self, cluster, p: Pending, index: int, res) -> None:  # type: ignore[no-untyped-def]
        p.entry = p.payload
        super()._complete_write(cluster, p, index, res)


def test_a_batched_write_recorded_at_another_revision_is_caught() -> None:
    seed = 0
    _, history = scripted(seed, MisnumberedClients)
    verdict = check(history, SCRIPTED.budget)
    assert not verdict.ok, f"seed {seed}: misnumbered batch members went unnoticed"
    assert "not linearizable" in verdict.report()


def test_a_batched_write_acknowledged_as_its_own_entry_is_caught() -> None:
    with pytest.raises(InvariantViolation, match="acknowledged"):
        scripted(0, OwnCommandAckClients)


def test_a_watch_stream_that_drops_part_of_a_batch_is_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The watchers judge batches too: a stream that drops every event sharing its revision
    with the one before it (the second and later commands of a batch) is caught."""
    real = KvStore.watch

    def lossy(self: KvStore, prefix: str = "", since: int = 0) -> list[Event]:
        events = real(self, prefix, since)
        return [e for i, e in enumerate(events) if i == 0 or e.revision != events[i - 1].revision]

    monkeypatch.setattr(KvStore, "watch", lossy)
    with pytest.raises(InvariantViolation, match="watch on"):
        scripted(0)


def _op(n: int, kind: str, key: str, call: int, ret: int, **kw: object) -> Operation:
    return Operation(n, n, kind, key, call, ret, **kw)  # type: ignore[arg-type]


def test_the_checker_takes_writes_sharing_an_index_and_refuses_one_misnumbered() -> None:
    """Pure: two puts batched at index 7 and a range reading both at mod revision 7 are
    linearizable; the same history with the second put recorded at 8 is not."""

    def history(second_index: int) -> list[Operation]:
        return [
            _op(0, "put", "k1", 10, 20, value=b"a", index=7, ok=True),
            _op(1, "put", "k2", 11, 20, value=b"b", index=second_index, ok=True),
            _op(2, "range", "k", 30, 30, items=(("k1", b"a", 7), ("k2", b"b", 7)), revision=7),
            _op(3, "get", "k2", 31, 40, result=(b"b", 7), revision=7),
        ]

    assert check(history(7)).ok
    bad = check(history(8))
    assert not bad.ok and "no write of b'b' to 'k2' at revision 7" in bad.report()


# --- command line --------------------------------------------------------------------------------


def test_cli_runs_a_batched_seed_and_reports_its_batches(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from sim.cli import main

    assert main(["kv", "--seed", "2", "--scenario", "crashes", "--batch-ms", "8"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("seed 2 ok scenario=crashes") and "batched_writes=" in out


def test_repro_command_names_a_batch_setting_the_preset_lacks() -> None:
    crashes = scenario_of("crashes", 3, False, 5.0)
    assert repro_command(crashes, 7).endswith("--scenario crashes --voters 3 --batch-ms 5")
    batched: KvScenario = scenario_of("batched", 5, True, None)
    assert repro_command(batched, 7).endswith("--scenario batched --voters 5 --wire")
    plain = scenario_of("mixed", 3, False, None)
    assert "--batch-ms" not in repro_command(plain, 7)
