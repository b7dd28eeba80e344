"""The autopilot's decisions (pure): who becomes a learner, who is promoted, who is removed."""

from __future__ import annotations

from consensus.messages import ConfChange, ConfChangeType, ConfState
from moltmesh.raft.autopilot import MemberHealth, decide, target_voters

T = ConfChangeType


def members(*specs: tuple[str, str, str, float]) -> dict[str, MemberHealth]:
    return {n: MemberHealth(n, s, tier, age) for n, s, tier, age in specs}


def test_target_is_1_3_or_5():
    assert [target_voters(n, 5) for n in (1, 2, 3, 4, 5, 9)] == [1, 1, 3, 3, 5, 5]
    assert target_voters(9, 3) == 3


def test_adds_the_most_capable_longest_alive_member_as_learner_first():
    ms = members(("a", "alive", "standard", 100), ("b", "alive", "light", 500),
                 ("c", "alive", "heavy", 5), ("d", "alive", "standard", 50))  # fmt: skip
    change = decide("a", ConfState(("a",), ()), ms, {}, lambda n: True)
    assert change == ConfChange(T.ADD_LEARNER, "c")  # heavy beats older light/standard
    change = decide("a", ConfState(("a",), ("c",)), ms, {}, lambda n: True)
    assert change == ConfChange(T.PROMOTE_LEARNER, "c")  # below target: promote


def test_promotes_only_caught_up_learners_and_caps_learners():
    ms = members(*[(n, "alive", "standard", 10.0) for n in "abcdefgh"])
    conf = ConfState(("a", "b", "c", "d", "e"), ("f", "g"))
    assert decide("a", conf, ms, {}, lambda n: False, max_learners=2) is None
    conf = ConfState(("a", "b", "c", "d", "e"), ("f",))
    assert decide("a", conf, ms, {}, lambda n: True, max_learners=1) is None
    conf = ConfState(("a", "b"), ("c",))
    assert decide("a", conf, ms, {}, lambda n: True) == ConfChange(T.PROMOTE_LEARNER, "c")


def test_a_voter_is_replaced_only_after_the_stabilization_period():
    ms = members(("a", "alive", "standard", 9), ("b", "alive", "standard", 9),
                 ("c", "suspect", "standard", 1), ("d", "alive", "standard", 9))  # fmt: skip
    conf = ConfState(("a", "b", "c"), ("d",))
    assert decide("a", conf, ms, {"c": 3.0}, lambda n: True, stabilization_s=10) is None
    assert decide("a", conf, ms, {"c": 10.0}, lambda n: True, stabilization_s=10) == ConfChange(
        T.REMOVE_VOTER, "c"
    )
    # then the learner takes its place
    conf = ConfState(("a", "b"), ("d",))
    assert decide("a", conf, ms, {"c": 11.0}, lambda n: True) == ConfChange(T.PROMOTE_LEARNER, "d")


def test_a_member_that_left_gracefully_is_removed_at_once_but_never_the_leader():
    ms = members(("a", "alive", "standard", 9), ("b", "left", "standard", 0))
    assert decide("a", ConfState(("a", "b"), ()), ms, {}, lambda n: True) == ConfChange(
        T.REMOVE_VOTER, "b"
    )
    ms = members(("a", "dead", "standard", 9))
    assert decide("a", ConfState(("a",), ()), ms, {"a": 99.0}, lambda n: True) is None


def test_voter_slots_are_filled_even_with_no_learner_slots():
    ms = members(*[(n, "alive", "standard", 10.0) for n in "abcd"])
    conf = ConfState(("a",), ())
    assert decide("a", conf, ms, {}, lambda n: True, max_learners=0) == ConfChange(
        T.ADD_LEARNER, "b"
    )
    conf = ConfState(("a", "b", "c"), ())
    assert decide("a", conf, ms, {}, lambda n: True, max_learners=0) is None
