"""The simulator's building blocks: event ordering, seeded streams, drifting clocks, the network."""

from __future__ import annotations

import random

import pytest

from sim.clock import NodeClock
from sim.kernel import Kernel, derive_rng
from sim.network import Network
from sim.scenario import FaultSpec, LinkSpec, Scenario, preset


def test_same_time_events_run_in_schedule_order() -> None:
    k = Kernel()
    out: list[str] = []
    k.at(5, out.append, "b")
    k.at(3, out.append, "a")
    k.at(5, out.append, "c")
    k.at(5, lambda: k.at(5, out.append, "d"))  # scheduled at the same instant, runs after
    k.run_until(10)
    assert out == ["a", "b", "c", "d"]
    assert k.now == 10


def test_run_until_stops_early_and_never_goes_back() -> None:
    k = Kernel()
    hits: list[int] = []
    for t in (1, 2, 3):
        k.at(t, lambda t=t: hits.append(t))
    assert k.run_until(100, stop=lambda: len(hits) == 2) is True
    assert k.now == 2
    k.at(0, hits.append, 99)  # the past is clamped to now
    k.run_until(100)
    assert hits == [1, 2, 99, 3]


def test_derived_streams_are_stable_and_independent() -> None:
    a = [derive_rng(7, "network").random() for _ in range(3)]
    assert a == [derive_rng(7, "network").random() for _ in range(3)]
    assert derive_rng(7, "network").random() != derive_rng(7, "faults").random()
    assert derive_rng(7, "network").random() != derive_rng(8, "network").random()


@pytest.mark.parametrize("seed", range(5))
def test_clock_to_virtual_inverts_local(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(200):
        base = rng.randrange(10**9)
        ppm = rng.randint(-50_000, 50_000)
        c = NodeClock(base, offset=rng.randrange(10**12), ppm=ppm)
        d = c.local(base) + rng.randrange(10**8)
        v = c.to_virtual(d)
        assert c.local(v) >= d, f"seed={seed}"
        assert v == base or c.local(v - 1) < d, f"seed={seed}"


def test_clock_drift_change_keeps_time_continuous_and_monotonic() -> None:
    c = NodeClock(0, offset=1000, ppm=100_000)  # runs 10 % fast
    assert c.local(1_000_000) == 1000 + 1_100_000
    before = c.local(500_000)
    c.set_drift(500_000, -100_000)
    assert c.local(500_000) == before
    assert c.local(600_000) == before + 90_000
    with pytest.raises(ValueError):
        NodeClock(0, ppm=-1_000_000)


def test_network_loss_duplication_and_delay_follow_the_spec() -> None:
    seed = 11
    spec = LinkSpec(delay_ms=10, jitter_ms=2, loss=0.2, duplicate=0.1)
    net = Network(["a", "b"], derive_rng(seed, "network"), spec)
    counts = [len(net.arrivals("a", "b", 0, 100)) for _ in range(5000)]
    lost = counts.count(0) / len(counts)
    dup = counts.count(2) / len(counts)
    assert 0.17 < lost < 0.23, f"seed={seed} loss={lost}"
    assert 0.06 < dup < 0.11, f"seed={seed} dup={dup}"
    times = [t for _ in range(500) for t in net.arrivals("a", "b", 0, 100)]
    assert min(times) >= 10_000 and max(times) < 12_000


def test_bandwidth_serialises_packets_on_a_link() -> None:
    net = Network(
        ["a", "b"], random.Random(0), LinkSpec(delay_ms=0, jitter_ms=0, bandwidth_bps=1e6)
    )
    first = net.arrivals("a", "b", 0, 1000)[0]
    second = net.arrivals("a", "b", 0, 1000)[0]
    other = net.arrivals("b", "a", 0, 1000)[0]
    assert (first, second, other) == (1000, 2000, 1000)


def test_partitions_symmetric_asymmetric_and_heal() -> None:
    net = Network(["a", "b", "c"], random.Random(0), LinkSpec(jitter_ms=0))
    net.partition([["a"], ["b", "c"]])
    assert net.arrivals("a", "b", 0, 1) == [] and net.arrivals("c", "a", 0, 1) == []
    assert net.arrivals("b", "c", 0, 1) != []
    net.heal()
    net.block("a", "b")
    assert net.arrivals("a", "b", 0, 1) == [] and net.arrivals("b", "a", 0, 1) != []
    net.isolate("c")
    net.heal(among=["b", "c"])
    assert net.blocked("a", "b") and net.blocked("a", "c") and not net.blocked("b", "c")


def test_scenarios_round_trip_through_dicts_and_reject_nonsense() -> None:
    for name in ("calm", "chaos"):
        sc = preset(name, nodes=3)
        assert Scenario.from_dict(sc.to_dict()) == sc
    with pytest.raises(ValueError):
        LinkSpec(loss=1.5)
    with pytest.raises(ValueError):
        FaultSpec(downtime_ms=(5.0, 1.0))
    with pytest.raises(ValueError):
        Scenario.from_dict({**preset("calm").to_dict(), "bogus": 1})
    with pytest.raises(ValueError):
        preset("nope")


def test_reliable_packets_are_never_lost_but_still_cut() -> None:
    spec = LinkSpec(delay_ms=5, jitter_ms=0, loss=0.9, duplicate=0.9)
    net = Network(["a", "b"], random.Random(3), spec)
    assert all(net.arrivals("a", "b", 0, 10, reliable=True) == [5000] for _ in range(100))
    net.block("a", "b")
    assert net.arrivals("a", "b", 0, 10, reliable=True) == []


def test_the_example_scenario_file_loads() -> None:
    import tomllib
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "sim" / "scenarios" / "flaky_wan.toml"
    sc = Scenario.from_dict(tomllib.loads(path.read_text(encoding="utf-8")))
    assert sc.nodes == 5 and [p.kind for p in sc.phases] == ["safety", "liveness"]
    assert sc.phases[0].faults.downtime_ms == (500.0, 8000.0)
    assert Scenario.from_dict(sc.to_dict()) == sc
