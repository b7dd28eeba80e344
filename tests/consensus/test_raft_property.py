"""Hypothesis drives the Raft cores message by message: any interleaving of deliveries, losses,
duplicates, timer firings, proposals, crashes and restarts keeps §5.4's safety properties.

The test net checks election safety, leader append-only and state machine safety on every
step; the invariant below adds log matching and leader completeness.
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from consensus.errors import NotLeader
from tests.consensus.raft_net import Net, cfg

IDS = ["a", "b", "c"]
nodes = st.sampled_from(IDS)


class RaftInterleavings(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        conf = cfg(max_entries_per_msg=2, max_inflight_msgs=2)
        self.net = Net(IDS, seed=0, config=conf)
        self.proposed = 0

    @rule(node=nodes)
    def campaign(self, node: str) -> None:
        if node not in self.net.down:
            self.net[node].campaign(self.net.now)
            self.net.flush(node)

    @rule(node=nodes, n=st.integers(1, 3))
    def propose(self, node: str, n: int) -> None:
        if node in self.net.down:
            return
        for _ in range(n):
            try:
                self.net[node].propose(b"%d" % self.proposed, self.net.now)
            except NotLeader:
                return
            self.proposed += 1
        self.net.flush(node)

    @precondition(lambda self: bool(self.net.queue))
    @rule(positions=st.lists(st.integers(0, 1000), min_size=1, max_size=8))
    def deliver(self, positions: list[int]) -> None:
        for pos in positions:
            self.net.deliver_one(pos)

    @precondition(lambda self: bool(self.net.queue))
    @rule()
    def deliver_everything(self) -> None:
        self.net.deliver()

    @precondition(lambda self: bool(self.net.queue))
    @rule(pos=st.integers(0, 1000))
    def lose(self, pos: int) -> None:
        del self.net.queue[pos % len(self.net.queue)]

    @precondition(lambda self: bool(self.net.queue))
    @rule(pos=st.integers(0, 1000))
    def duplicate(self, pos: int) -> None:
        self.net.queue.append(self.net.queue[pos % len(self.net.queue)])

    @rule(dt=st.integers(1, 60_000), node=nodes)
    def time_passes_and_a_timer_fires(self, dt: int, node: str) -> None:
        self.net.now += dt
        self.net.tick_one(node)

    @precondition(lambda self: len(self.net.down) == 0)
    @rule(node=nodes)
    def crash(self, node: str) -> None:
        self.net.crash(node)

    @precondition(lambda self: bool(self.net.down))
    @rule()
    def restart(self) -> None:
        self.net.restart(sorted(self.net.down)[0])

    @invariant()
    def logs_match_and_leaders_are_complete(self) -> None:
        self.net.check_log_matching()


RaftInterleavings.TestCase.settings = settings(
    max_examples=40, stateful_step_count=60, deadline=None
)
TestRaftInterleavings = RaftInterleavings.TestCase
