"""Raft §5.4 safety: election restriction, commitment rule (figure 8), and a seeded fault sweep
(with snapshots, membership changes, transfers and reads)."""

from __future__ import annotations

import contextlib
import dataclasses
import random

import pytest

from consensus.errors import ConfChangeError, LocalProtocolError, NotLeader
from consensus.messages import (
    AppendEntries,
    ConfChange,
    ConfChangeType,
    Message,
    VoteRequest,
    VoteResponse,
)
from consensus.raft import RaftNode, Role
from tests.consensus.raft_net import Net, cfg, preload

PLAIN = cfg(pre_vote=False, check_quorum=False)
S = ["s1", "s2", "s3", "s4", "s5"]


def test_vote_refused_to_a_candidate_whose_log_is_less_up_to_date() -> None:
    # §5.4.1: higher last term wins; same last term, longer log wins.
    cases = [
        ([1, 2], (3, 1), True),  # candidate's last term is lower
        ([1, 2], (1, 2), True),  # same last term, shorter log
        ([1, 2], (2, 2), False),  # identical
        ([1, 2], (1, 3), False),  # higher last term, shorter log
        ([1, 2], (5, 2), False),  # same last term, longer log
    ]
    for terms, (cand_index, cand_term), rejected in cases:
        node = RaftNode("v", ["c", "v", "w"], preload(terms), PLAIN, random.Random(0))
        node.step(VoteRequest("c", "v", 9, cand_index, cand_term), 0)
        (resp,) = node.ready().messages
        assert isinstance(resp, VoteResponse) and resp.reject is rejected, (terms, cand_index)


def _strip_term(term: int, *, only_to: set[str]) -> object:
    """Network rewrite: appends from s1 lose entries of ``term``; go only to ``only_to``."""

    def rewrite(m: Message) -> Message | None:
        if isinstance(m, AppendEntries) and m.src == "s1":
            if m.dst not in only_to:
                return None
            kept = tuple(e for e in m.entries if e.term != term)
            return dataclasses.replace(m, entries=kept)
        return m

    return rewrite


def _figure8_prefix(strip_term: int) -> tuple[Net, int]:
    """Figure 8 (a)-(b): s1 leads term 2 and gets 'x' to s2 only; s5 leads term 3 alone."""
    storages = {i: preload([1], hard_term=1) for i in S}
    net = Net(S, seed=8, config=PLAIN, storages=storages)
    net.drop = lambda m: isinstance(m, AppendEntries) and m.src == "s1" and m.dst != "s2"
    net.elect("s1")
    assert net["s1"].term == 2
    x_index = net.propose("s1", b"x")
    assert net.log_terms("s2") == [1, 2, 2] and net["s1"].commit_index < x_index
    net.crash("s1")
    net.drop = lambda m: isinstance(m, AppendEntries) and m.src == "s5"
    net.elect("s5")  # votes of s3, s4, s5
    assert net["s5"].term == 3 and net.log_terms("s5") == [1, 3]
    net.crash("s5")
    net.heal()
    net.rewrite = _strip_term(strip_term, only_to={"s2", "s3"})  # type: ignore[assignment]
    net.restart("s1")
    for _ in range(3):  # s3, s4 voted for s5 in term 3: s1 needs term 4
        net["s1"].campaign(net.now)
        net.deliver()
        if net["s1"].role is Role.LEADER:
            break
    assert net["s1"].role is Role.LEADER and net["s1"].term == 4
    return net, x_index


def test_figure8_entry_of_an_old_term_on_a_majority_is_not_committed() -> None:
    net, x_index = _figure8_prefix(strip_term=4)
    net.deliver()
    net.advance(net.config.heartbeat_interval * 3)
    # (c): s1, s2, s3 hold x (term 2) at x_index - a majority - yet s1 must not commit it.
    for i in ("s1", "s2", "s3"):
        assert net.log_terms(i)[:3] == [1, 2, 2]
    assert net["s1"].commit_index < x_index
    assert all(b"x" not in net.applied_data(i) for i in S)
    # (d): s1 crashes; s5 (last term 3) wins term 5 and overwrites x everywhere.
    net.crash("s1")
    net.heal()
    net.restart("s5")
    for _ in range(3):  # s2, s3, s4 sit in term 4: s5 (term 3) needs two rounds
        net["s5"].campaign(net.now)
        net.deliver()
        if net["s5"].role is Role.LEADER:
            break
    assert net["s5"].role is Role.LEADER and net["s5"].term == 5
    lead = net.wait_leader()
    net.advance(net.config.heartbeat_interval * 3)
    for i in net.live():
        assert net.log_terms(i)[1] == 3, (i, net.log_terms(i))
        assert b"x" not in net.applied_data(i)
    assert net[lead].commit_index >= 3
    net.check_log_matching()


def test_figure8_entry_committed_with_one_of_the_current_term_survives() -> None:
    net, x_index = _figure8_prefix(strip_term=0)
    net.deliver()
    net.advance(net.config.heartbeat_interval * 2)
    # (e): the term-4 no-op reached s2, s3: it commits, and x (before it) with it.
    assert net["s1"].commit_index >= x_index + 1
    assert b"x" in net.applied_data("s1")
    net.crash("s1")
    net.heal()
    net.restart("s5")
    for _ in range(3):
        net["s5"].campaign(net.now)
        net.deliver()
        assert net["s5"].role is not Role.LEADER  # s2, s3 hold a newer log: s5 cannot win
    lead = net.wait_leader()
    assert lead in ("s2", "s3")
    net.advance(net.config.heartbeat_interval * 3)
    for i in net.live():
        assert b"x" in net.applied_data(i)
    net.check_log_matching()


@pytest.mark.parametrize("seed", range(24))
def test_random_faults_never_break_safety(seed: int) -> None:
    """Random partitions, crashes, restarts, drops, proposals — and snapshots with log
    compaction, membership changes (learners joining, promotions, removals, the leader's own),
    leadership transfers, ReadIndex reads, and slow disks (a Ready outstanding while messages
    arrive). The net checks election safety and state machine
    safety on every flush (snapshots restored included), log matching as it goes; every read
    served is at or after every write applied before it started. Then the faults heal and the
    group must make progress, every member applying the same log."""
    rng = random.Random(seed)
    ids = S[: rng.choice([3, 5])]
    conf = cfg(
        pre_vote=rng.random() < 0.7,
        check_quorum=rng.random() < 0.7,
        max_entries_per_msg=4,
        max_bytes_per_msg=rng.choice([256, 64 * 1024]),  # small: snapshots go in many chunks
    )
    net = Net(ids, seed=seed, config=conf)
    newcomers = ["n1", "n2", "n3"]
    read_floor: dict[bytes, int] = {}
    proposed = 0
    try:
        for step in range(60):
            r = rng.random()
            if r < 0.1:
                net.heal()
                net.partition(*_split(rng, net.ids))
            elif r < 0.15:
                net.heal()
            elif r < 0.22 and len(net.down) < len(net.ids) // 2:
                net.crash(rng.choice(net.live()))
            elif r < 0.3 and net.down:
                net.restart(rng.choice(sorted(net.down)))
            elif r < 0.35:
                drop_rate = rng.random() * 0.3
                net.drop = lambda _m, p=drop_rate: rng.random() < p
            elif r < 0.45:
                net.reorder, net.duplicate, net.delay = (
                    rng.random(),
                    rng.random() * 0.2,
                    rng.random() * 0.2,
                )
            _maybe_compact(net, rng)
            lead = net.leader()
            if lead is not None and rng.random() < 0.6:
                for _ in range(rng.randint(1, 4)):
                    try:
                        net[lead].propose(f"{seed}:{proposed}".encode(), net.now)
                    except NotLeader:
                        break
                    proposed += 1
            if lead is not None and rng.random() < 0.25:
                _membership_step(net, lead, rng, newcomers)
            if lead is not None and rng.random() < 0.05:
                with contextlib.suppress(NotLeader, LocalProtocolError):
                    net[lead].transfer_leadership(rng.choice(net[lead].voters), net.now)
            reader = rng.choice(net.live())
            ctx = b"%d" % step
            with contextlib.suppress(NotLeader):
                net[reader].read_index(ctx, net.now)
                read_floor[ctx] = max(net.committed, default=0)
            slow = rng.choice(net.live()) if rng.random() < 0.3 else None
            if slow is not None:
                net.hold(slow)  # a slow disk: its Ready stays outstanding while time passes
            net.advance(rng.randint(1, 3 * conf.election_timeout_max))
            if slow is not None:
                net.release(slow)
            net.check_log_matching()
        net.heal()
        for i in sorted(net.down):
            net.restart(i)
        net.run_until(
            lambda: _settled_leader(net) is not None, limit=20 * conf.election_timeout_max
        )
        lead = _settled_leader(net)
        assert lead is not None
        index = net[lead].propose(b"final", net.now)
        members = sorted(set(net[lead].voters) | set(net[lead].learners))
        net.run_until(lambda: all(net[i].applied_index >= index for i in members))
    except AssertionError as e:
        raise AssertionError(f"{e} (seed {seed})") from e
    net.check_log_matching()
    datas = {tuple(net.applied_data(i)) for i in net.ids if net.applied[i]}
    assert len({d[: min(map(len, datas))] for d in datas}) == 1, f"seed {seed}"
    for i in net.ids:
        for rs in net.read_states[i]:
            assert rs.index >= read_floor[rs.context], f"stale read {rs} (seed {seed})"


def _maybe_compact(net: Net, rng: random.Random) -> None:
    """Now and then, snapshot a node's state machine and compact its log."""
    if rng.random() < 0.15:
        node = rng.choice(net.live())
        if net[node].applied_index > net.storages[node].snapshot_index():
            net.compact(node, keep=rng.choice([0, 2, 8]))


def _membership_step(net: Net, lead: str, rng: random.Random, newcomers: list[str]) -> None:
    """Propose a random single-server change the leader may refuse."""
    node = net[lead]
    cs = node.conf_state
    options: list[ConfChange] = []
    if newcomers:
        options.append(ConfChange(ConfChangeType.ADD_LEARNER, newcomers[0]))
    options += [ConfChange(ConfChangeType.PROMOTE_LEARNER, n) for n in cs.learners]
    if len(cs.voters) > 2:
        options += [ConfChange(ConfChangeType.REMOVE_VOTER, v) for v in cs.voters]
    options += [ConfChange(ConfChangeType.REMOVE_LEARNER, n) for n in cs.learners]
    if not options:
        return
    change = rng.choice(options)
    if change.type is ConfChangeType.ADD_LEARNER and change.node not in net.nodes:
        net.add_node(change.node)
    try:
        node.propose_conf_change(change, net.now)
    except (ConfChangeError, NotLeader):
        return
    if change.type is ConfChangeType.ADD_LEARNER:
        newcomers.remove(change.node)


def _settled_leader(net: Net) -> str | None:
    """A live leader, not handing over, that every live voter of its membership follows."""
    lead = net.leader()
    if lead is None or lead not in net[lead].voters or net[lead].transferee is not None:
        return None
    voters = [v for v in net[lead].voters if v not in net.down]
    return lead if all(net[v].leader_id == lead for v in voters) else None


def _split(rng: random.Random, ids: list[str]) -> list[list[str]]:
    shuffled = ids[:]
    rng.shuffle(shuffled)
    cut = rng.randint(1, len(ids) - 1)
    return [shuffled[:cut], shuffled[cut:]]
