"""Checker self-tests: feed the Raft checkers known-bad histories and expect each caught."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from consensus.messages import ConfState, Entry, EntryKind, HardState
from consensus.raft import Ready, Role
from consensus.storage import MemoryStorage
from sim.adapter import SimNode
from sim.errors import InvariantViolation
from sim.raft_checkers import RaftChecker

VOTERS = ("a", "b", "c")


def node(nid: str, role: Role = Role.FOLLOWER, term: int = 1) -> SimNode:
    n = SimNode(nid, MemoryStorage(conf_state=ConfState(voters=VOTERS)))
    n.core = SimpleNamespace(role=role, term=term)
    n.up = True
    return n


def cluster(*nodes: SimNode) -> Any:
    return SimpleNamespace(now=1234, nodes={n.id: n for n in nodes})


def persist(
    ch: RaftChecker, cl: Any, n: SimNode, entries: list[Entry], hs: HardState | None = None
) -> None:
    rd = Ready(hard_state=hs, entries=entries)
    if hs is not None:
        n.disk.set_hard_state(hs)
    n.disk.append(entries)
    ch.after_persist(cl, n, rd)


def apply(ch: RaftChecker, cl: Any, n: SimNode, entries: list[Entry]) -> None:
    ch.after_apply(cl, n, Ready(committed=entries))


E1 = Entry(1, 1, EntryKind.NOOP)
E2 = Entry(2, 1, EntryKind.NORMAL, b"x")


def test_a_correct_history_passes() -> None:
    ch = RaftChecker()
    a, b = node("a", Role.LEADER), node("b")
    cl = cluster(a, b)
    persist(ch, cl, a, [E1, E2], HardState(1, "a", 0))
    ch.after_activation(cl, a)
    persist(ch, cl, b, [E1, E2], HardState(1, "a", 0))
    for n in (a, b):
        apply(ch, cl, n, [E1, E2])
    ch.acknowledge(cl, 2, b"x")
    ch.after_activation(cl, b)
    ch.finish(cl)


def test_two_leaders_in_one_term() -> None:
    ch = RaftChecker()
    a, b = node("a", Role.LEADER, 3), node("b", Role.LEADER, 3)
    cl = cluster(a, b)
    ch.after_activation(cl, a)
    with pytest.raises(InvariantViolation, match="election safety"):
        ch.after_activation(cl, b)


def test_same_index_and_term_with_different_data() -> None:
    ch = RaftChecker()
    a, b = node("a"), node("b")
    cl = cluster(a, b)
    persist(ch, cl, a, [E1, E2])
    with pytest.raises(InvariantViolation, match="log matching"):
        persist(ch, cl, b, [E1, Entry(2, 1, EntryKind.NORMAL, b"y")])


def test_same_index_and_term_with_different_prefix() -> None:
    ch = RaftChecker()
    a, b = node("a"), node("b")
    cl = cluster(a, b)
    persist(ch, cl, a, [Entry(1, 1), Entry(2, 3)])
    with pytest.raises(InvariantViolation, match="log matching"):
        persist(ch, cl, b, [Entry(1, 2), Entry(2, 3)])


def test_two_nodes_apply_different_entries_at_one_index() -> None:
    ch = RaftChecker()
    a, b = node("a"), node("b")
    cl = cluster(a, b)
    apply(ch, cl, a, [Entry(1, 1, data=b"p")])
    with pytest.raises(InvariantViolation, match="state machine safety"):
        apply(ch, cl, b, [Entry(1, 2, data=b"q")])


def test_a_leader_missing_a_committed_entry() -> None:
    ch = RaftChecker()
    a, c = node("a"), node("c", Role.LEADER, 2)
    cl = cluster(a, c)
    persist(ch, cl, a, [E1, E2])
    apply(ch, cl, a, [E1, E2])
    persist(ch, cl, c, [E1])  # c lacks committed index 2
    with pytest.raises(InvariantViolation, match="leader completeness"):
        ch.after_activation(cl, c)


def test_an_acknowledged_proposal_overwritten() -> None:
    ch = RaftChecker()
    a = node("a")
    cl = cluster(a)
    apply(ch, cl, a, [E1, E2])
    ch.acknowledge(cl, 2, b"x")
    # a history in which the committed map was (wrongly) never told: a later apply differs
    ch.committed.pop(2)
    b = node("b")
    with pytest.raises(InvariantViolation, match="acknowledged proposal lost"):
        apply(ch, cl, b, [E1, Entry(2, 2, data=b"other")])


def test_an_acknowledged_proposal_missing_from_the_final_leader() -> None:
    ch = RaftChecker()
    a, b = node("a"), node("b", Role.LEADER, 2)
    cl = cluster(a, b)
    persist(ch, cl, a, [E1, E2])
    apply(ch, cl, a, [E1, E2])
    ch.acknowledge(cl, 2, b"x")
    persist(ch, cl, b, [E1])
    with pytest.raises(InvariantViolation, match="acknowledged proposal lost"):
        ch.finish(cl)


def test_a_stale_leader_of_an_older_term_may_lack_later_acknowledged_entries() -> None:
    """Also from seed 261: an isolated leader of term 1 never saw what term 2 committed."""
    ch = RaftChecker()
    a, b, c = node("a", Role.LEADER, 2), node("b"), node("c", Role.LEADER, 1)
    cl = cluster(a, b, c)
    persist(ch, cl, c, [E1], HardState(1, "c", 1))
    for n in (a, b):
        persist(ch, cl, n, [E1, Entry(2, 2, data=b"x")], HardState(2, "a", 2))
        apply(ch, cl, n, [E1, Entry(2, 2, data=b"x")])
    ch.acknowledge(cl, 2, b"x")
    ch.finish(cl)  # c (term 1) lacks index 2: fine; a (term 2) holds it
    a.disk = MemoryStorage(conf_state=ConfState(voters=VOTERS))
    with pytest.raises(InvariantViolation, match="acknowledged proposal lost"):
        ch.finish(cl)


def test_acknowledging_something_never_committed() -> None:
    ch = RaftChecker()
    cl = cluster(node("a"))
    with pytest.raises(InvariantViolation):
        ch.acknowledge(cl, 5, b"ghost")


def test_committed_entry_overwritten_in_a_log() -> None:
    ch = RaftChecker()
    a, b = node("a"), node("b")
    cl = cluster(a, b)
    persist(ch, cl, a, [E1, E2])
    apply(ch, cl, a, [E1, E2])
    persist(ch, cl, b, [E1, E2], HardState(1, "a", 2))  # b knows index 2 is committed
    with pytest.raises(InvariantViolation, match="committed entry overwritten"):
        persist(ch, cl, b, [Entry(2, 2, data=b"z")])


def test_a_lagging_node_may_hold_a_stale_entry_where_others_committed() -> None:
    """Found by seed 261 of the 3-node partitions sweep: not a violation, the checker was wrong.

    c missed the majority that committed (2, term 2) and still accepts a delayed append of
    (2, term 1) from the old leader; it will be overwritten when c hears from the new leader.
    """
    ch = RaftChecker()
    a, c = node("a"), node("c")
    cl = cluster(a, c)
    persist(ch, cl, a, [E1, Entry(2, 2, EntryKind.NOOP)])
    apply(ch, cl, a, [E1, Entry(2, 2, EntryKind.NOOP)])
    persist(ch, cl, c, [E1, Entry(2, 1, data=b"stale")], HardState(1, "b", 1))
    persist(ch, cl, c, [Entry(2, 2, EntryKind.NOOP)], HardState(2, None, 2))


@pytest.mark.parametrize(
    ("first", "second", "what"),
    [
        (HardState(5, "a"), HardState(4, "a"), "persisted term 4 after 5"),
        (HardState(5, "a"), HardState(5, "b"), "changed its vote"),
    ],
)
def test_durable_term_and_vote(first: HardState, second: HardState, what: str) -> None:
    ch = RaftChecker()
    a = node("a")
    cl = cluster(a)
    persist(ch, cl, a, [], first)
    with pytest.raises(InvariantViolation, match=what):
        persist(ch, cl, a, [], second)
