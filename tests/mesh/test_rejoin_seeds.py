"""Groups that lost each other find each other again (review9 H1's lasting split, and its LOW
item: a node restarted without seeds). Part one drives SWIM cores by hand on a virtual clock;
part two starts real mesh runtimes on loopback."""

from __future__ import annotations

import random
from collections.abc import Iterable

import pytest

from consensus.swim import SwimCore
from consensus.swim_config import SwimConfig, local
from consensus.swim_messages import MemberState, MemberStatus, Meta, PushPull
from consensus.swim_types import Outgoing

S = 1_000_000


class Net:
    """SWIM cores whose address is their id, delivering every message at once (in order)
    unless ``cut`` separates the two ends. Virtual time; nothing random but the cores' rngs."""

    def __init__(self, cores: Iterable[SwimCore]) -> None:
        self.cores = {c.id: c for c in cores}
        self.now = 0
        self.cut: set[frozenset[str]] = set()
        self.pushes_to: dict[str, int] = {}
        self.pushes: list[tuple[str, str, bool]] = []  # (from, to address, join)

    def _deliver(self, src: str, out: Outgoing) -> None:
        if isinstance(out.msg, PushPull) and not out.msg.response:
            self.pushes_to[out.addr] = self.pushes_to.get(out.addr, 0) + 1
            self.pushes.append((src, out.addr, out.msg.join))
        if frozenset((src, out.addr)) in self.cut or out.addr not in self.cores:
            return
        self.cores[out.addr].step(out.msg, self.now)  # type: ignore[arg-type]

    def pump(self) -> None:
        moved = True
        while moved:
            moved = False
            for node, core in sorted(self.cores.items()):
                if core.has_ready():
                    rd = core.ready()
                    for out in [*rd.packets, *rd.streams]:
                        moved = True
                        self._deliver(node, out)

    def run_until(self, until: int) -> None:
        while True:
            due = min(d for c in self.cores.values() if (d := c.next_deadline()) is not None)
            if due > until:
                self.now = until
                return
            self.now = due
            for core in self.cores.values():
                core.tick(due)
            self.pump()

    def merged(self) -> bool:
        everyone = sorted(self.cores)
        return all(c.live_members() == everyone for c in self.cores.values())


def group(ids: str, config: SwimConfig, seed: int, seeds: dict[str, list[str]]) -> list[SwimCore]:
    """Cores that already know each other (and no one else)."""
    states = [MemberState(i, MemberStatus.ALIVE, 0, 0, Meta(i)) for i in ids]
    return [
        SwimCore(
            i,
            Meta(i),
            config,
            random.Random(f"{seed}-{i}"),
            0,
            members=states,
            seeds=seeds.get(i, ()),
        )
        for i in ids
    ]


@pytest.mark.parametrize("seed", range(5))
def test_two_groups_that_lost_each_other_merge_within_a_few_periods(seed: int) -> None:
    cfg = local()
    # "a" holds the CA (no seeds); every other node has a's address as its seed (ca_address).
    seeds = {i: ["a"] for i in "bcdef"}
    net = Net([*group("abc", cfg, seed, seeds), *group("def", cfg, seed, seeds)])
    bound = 2 * cfg.seed_retry_interval + 10 * cfg.probe_interval
    net.run_until(bound)
    assert net.merged(), f"seed={seed}: {[c.live_members() for c in net.cores.values()]}"
    assert net.pushes_to.get("a", 0) >= 1, f"seed={seed}"


def test_no_seed_retry_while_every_seed_is_a_live_member() -> None:
    cfg = local()
    net = Net(group("abc", cfg, 7, {"b": ["a"], "c": ["a", "b"]}))
    net.run_until(5 * cfg.seed_retry_interval)
    pushes = net.pushes_to
    # Only periodic push-pulls (every push_pull_interval, 2 s in local()) reach a: no seed
    # retry to an address a live member has.
    assert pushes.get("a", 0) <= 2 * (5 * cfg.seed_retry_interval // cfg.push_pull_interval + 1)
    assert net.merged()


def test_seed_retry_is_one_missing_seed_per_interval_in_turn() -> None:
    cfg = local()
    net = Net(group("ab", cfg, 3, {"a": ["s1", "s2", "b", "a"]}))  # s1, s2: nobody answers
    net.run_until(4 * cfg.seed_retry_interval)
    to_seeds = [(to, join) for src, to, join in net.pushes if to.startswith("s")]
    assert to_seeds == [("s1", True), ("s2", True), ("s1", True), ("s2", True)]  # b is live
    assert net.merged()
