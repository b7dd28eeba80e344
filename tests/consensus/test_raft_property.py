"""Hypothesis drives the Raft cores message by message: any interleaving of deliveries, losses,
duplicates, timer firings, proposals, crashes and restarts — and of snapshots with compaction,
membership changes, leadership transfers and ReadIndex reads — keeps §5.4's safety properties.

The test net checks election safety, leader append-only and state machine safety on every
step (entries restored from snapshots included); the invariants below add log matching, leader
completeness, and that no read is served below a write applied before the read started.
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from consensus.errors import ConfChangeError, LocalProtocolError, NotLeader
from consensus.messages import ConfChange, ConfChangeType
from tests.consensus.raft_net import Net, cfg

IDS = ["a", "b", "c"]
nodes = st.sampled_from(IDS)
changes = st.builds(ConfChange, st.sampled_from(ConfChangeType), st.sampled_from([*IDS, "d"]))


class RaftInterleavings(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        conf = cfg(max_entries_per_msg=2, max_inflight_msgs=2, max_bytes_per_msg=64)
        self.net = Net(IDS, seed=0, config=conf)
        self.net.add_node("d")  # outside the group until a change adds it
        self.proposed = 0
        self.reads = 0
        self.read_floor: dict[bytes, int] = {}

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

    @rule(node=nodes, keep=st.integers(0, 3))
    def snapshot_and_compact(self, node: str, keep: int) -> None:
        net = self.net
        if node not in net.down and net[node].applied_index > net.storages[node].snapshot_index():
            net.compact(node, keep=keep)

    @rule(node=nodes, change=changes)
    def change_membership(self, node: str, change: ConfChange) -> None:
        if node in self.net.down:
            return
        try:
            self.net[node].propose_conf_change(change, self.net.now)
        except (NotLeader, ConfChangeError):
            return
        self.net.flush(node)

    @rule(node=nodes, to=nodes)
    def transfer_leadership(self, node: str, to: str) -> None:
        if node in self.net.down:
            return
        try:
            self.net[node].transfer_leadership(to, self.net.now)
        except (NotLeader, LocalProtocolError):
            return
        self.net.flush(node)

    @rule(node=nodes)
    def read(self, node: str) -> None:
        if node in self.net.down:
            return
        ctx = b"%d" % self.reads
        self.reads += 1
        try:
            self.net[node].read_index(ctx, self.net.now)
        except NotLeader:
            return
        self.read_floor[ctx] = max(self.net.committed, default=0)
        self.net.flush(node)

    @rule(node=nodes)
    def disk_is_slow(self, node: str) -> None:
        """Take a node's Ready and keep it outstanding while messages arrive."""
        if node not in self.net.down:
            self.net.hold(node)

    @precondition(lambda self: bool(self.net.held_ready))
    @rule()
    def disk_catches_up(self) -> None:
        self.net.release(sorted(self.net.held_ready)[0])

    @invariant()
    def logs_match_and_leaders_are_complete(self) -> None:
        self.net.check_log_matching()

    @invariant()
    def reads_see_every_write_applied_before_them(self) -> None:
        for states in self.net.read_states.values():
            for rs in states:
                assert rs.index >= self.read_floor[rs.context], rs


RaftInterleavings.TestCase.settings = settings(
    max_examples=40, stateful_step_count=60, deadline=None
)
TestRaftInterleavings = RaftInterleavings.TestCase
