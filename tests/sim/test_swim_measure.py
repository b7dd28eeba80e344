"""The simulator's SWIM measurements return sane figures on small clusters."""

from __future__ import annotations

from consensus.lifeguard import suspicion_timeout
from consensus.swim_config import lan, local
from sim.scenario import LinkSpec
from sim.swim_run import S, detection_time, dissemination_times, steady_load


def test_dissemination_times_one_sample_per_update() -> None:
    seed = 41
    xs = dissemination_times(20, seed, local(), updates=4, link=LinkSpec(delay_ms=5.0))
    assert len(xs) == 4, f"seed {seed}"
    assert all(0.005 < x < 2.0 for x in xs), f"seed {seed}: {xs}"


def test_detection_comes_after_suspicion_and_not_before_the_minimum() -> None:
    seed = 42
    d = detection_time(10, seed, lan())
    minimum = suspicion_timeout(lan().suspicion_mult, 10, lan().probe_interval) / S
    assert 0 < d.first_suspicion < d.all_dead, f"seed {seed}: {d}"
    assert d.all_dead - d.first_suspicion >= minimum - 0.5, f"seed {seed}: {d}"


def test_steady_load_is_one_probe_and_one_ack_per_member_second() -> None:
    load = steady_load(10, 43, lan(), window_s=30)
    assert 1.8 <= load.packets <= 2.2, load
    assert 20 <= load.packet_bytes / load.packets <= 60, load  # small packets, no gossip
