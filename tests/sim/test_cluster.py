"""The generic driver, exercised with the toy core of ``tests/sim/toy.py``."""

from __future__ import annotations

import pytest

from sim.adapter import Booted
from sim.cluster import Cluster
from sim.errors import CodecMismatch, CoreMisbehaved
from sim.scenario import LinkSpec

from .toy import StuckCore, ToyAdapter

IDS = ["a", "b", "c", "d"]
MAX = 30  # the toy's initial values are 0, 10, 20, 30


def make(seed: int = 0, **kw: object) -> Cluster:
    link = kw.pop("link", LinkSpec(delay_ms=2, jitter_ms=1))
    adapter = kw.pop("adapter", ToyAdapter(IDS))
    c = Cluster(adapter, IDS, seed, link, **kw)  # type: ignore[arg-type]
    c.start()
    return c


def values(c: Cluster) -> dict[str, int]:
    return {i: n.core.value for i, n in c.nodes.items() if n.up}


def test_gossip_converges_and_idle_time_is_jumped_over() -> None:
    c = make()
    c.run_until(1_000_000)
    assert set(values(c).values()) == {MAX}
    # one tick per 10 ms interval per node: no fixed-rate ticking in between
    ticks = len(c.nodes["a"].core.ticks)
    assert 95 <= ticks <= 102
    assert c.kernel.events_run < 2_000


def test_partition_blocks_until_heal() -> None:
    c = make()
    c.network.partition([["a", "b"], ["c", "d"]])
    c.run_until(500_000)
    assert values(c) == {"a": 10, "b": 10, "c": 30, "d": 30}
    c.network.heal()
    c.run_until(1_000_000)
    assert set(values(c).values()) == {MAX}


def test_asymmetric_partition_lets_one_direction_through() -> None:
    c = make()
    for src in ("c", "d"):
        for dst in ("a", "b"):
            c.network.block(src, dst)
    c.run_until(500_000)
    assert values(c) == {"a": 10, "b": 10, "c": 30, "d": 30}
    c.network.heal()
    for src in ("a", "b"):
        for dst in ("c", "d"):
            c.network.block(src, dst)
    c.run_until(1_000_000)
    assert set(values(c).values()) == {MAX}


def test_crash_keeps_the_disk_and_restart_boots_from_it() -> None:
    c = make()
    c.run_until(500_000)
    c.crash("a")
    assert not c.nodes["a"].up and c.nodes["a"].core is None
    assert c.nodes["a"].disk == {"value": MAX}
    c.run_until(600_000)  # timers of the dead incarnation must not fire
    c.restart("a")
    assert c.nodes["a"].core.value == MAX and c.nodes["a"].app == []


def test_a_crash_during_fsync_loses_that_ready() -> None:
    # persisting takes 50-60 ms; crash the node while its first adoption is being persisted
    c = make(persist_ms=(50.0, 60.0), link=LinkSpec(delay_ms=1, jitter_ms=0))
    a = c.nodes["a"]
    c.run_until(1_000_000, stop=lambda: a.persisting)
    assert a.persisting and a.disk == {"value": 0}
    c.crash("a")
    assert a.disk == {"value": 0}  # the in-flight Ready never reached the disk
    c.run_until(c.now + 100_000)
    assert a.disk == {"value": 0}
    c.restart("a")
    c.run_until(c.now + 1_000_000)
    assert a.disk == {"value": MAX}


@pytest.mark.parametrize("seed", range(4))
def test_clock_drift_changes_tick_rates(seed: int) -> None:
    c = make(seed, drift_ppm=100_000)
    c.run_until(2_000_000)
    ticks = {i: len(n.core.ticks) for i, n in c.nodes.items()}
    ppm = {i: n.clock.ppm for i, n in c.nodes.items()}
    fast = max(ppm, key=lambda i: ppm[i])
    slow = min(ppm, key=lambda i: ppm[i])
    if ppm[fast] - ppm[slow] > 50_000:
        assert ticks[fast] > ticks[slow], f"seed={seed} ppm={ppm} ticks={ticks}"
    # the local clock the core sees is skewed virtual time
    n = c.nodes["a"]
    assert n.core.ticks[-1] <= n.now(c.now)


def test_same_seed_same_trace_different_seed_different_trace() -> None:
    def run(seed: int) -> str:
        c = make(seed, link=LinkSpec(delay_ms=2, jitter_ms=3, loss=0.1, duplicate=0.1, reorder=0.2))
        c.run_until(300_000)
        return c.trace.digest()

    assert run(5) == run(5)
    assert run(5) != run(6)


def test_wire_mode_catches_a_codec_that_changes_messages() -> None:
    good = make(wire=True)
    good.run_until(200_000)
    assert set(values(good).values()) == {MAX}
    bad = make(wire=True, adapter=ToyAdapter(IDS, codec_bug=True))
    with pytest.raises(CodecMismatch):
        bad.run_until(200_000)


class StuckAdapter(ToyAdapter):
    def boot(self, node_id, disk, rng, now):  # type: ignore[no-untyped-def]
        return Booted(StuckCore(node_id, self.ids, disk["value"], self.interval, now), [])


def test_a_core_that_never_moves_its_deadline_is_reported() -> None:
    c = make(adapter=StuckAdapter(IDS))
    with pytest.raises(CoreMisbehaved):
        c.run_until(1_000_000)
