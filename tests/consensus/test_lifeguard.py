"""Table-driven tests of the Lifeguard and SWIM arithmetic (values from hashicorp/memberlist)."""

from __future__ import annotations

import pytest

from consensus.lifeguard import (
    Awareness,
    Suspicion,
    push_pull_interval,
    remaining_suspicion_time,
    retransmit_limit,
    suspicion_timeout,
)

MS = 1_000
S = 1_000_000


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (0, 1000 * MS),
        (1, 1000 * MS),
        (5, 1000 * MS),
        (10, 1000 * MS),
        (50, 1698 * MS),
        (100, 2000 * MS),
        (500, 2698 * MS),
        (1000, 3000 * MS),
    ],
)
def test_suspicion_timeout_scales_with_log10_of_cluster_size(n: int, expected: int) -> None:
    assert suspicion_timeout(3, n, 1 * S) // 3 == expected


@pytest.mark.parametrize(
    ("confirmations", "k", "elapsed", "expected"),
    [
        (0, 3, 0, 30 * S),  # no confirmation: the maximum
        (1, 3, 2 * S, 14 * S),  # 30 - 28·log2/log4 = 16 s, minus 2 s elapsed
        (2, 3, 3 * S, 4810 * MS),  # 30 - 28·log3/log4 = 7.81 s, minus 3 s
        (3, 3, 4 * S, -2 * S),  # k confirmations: the minimum (2 s), already passed
        (4, 3, 5 * S, -3 * S),  # beyond k never goes under the minimum
        (5, 3, 10 * S, -8 * S),
    ],
)
def test_remaining_suspicion_time_shrinks_from_max_to_min(
    confirmations: int, k: int, elapsed: int, expected: int
) -> None:
    assert remaining_suspicion_time(confirmations, k, elapsed, 2 * S, 30 * S) == expected


def test_remaining_suspicion_time_without_expected_confirmations_is_the_minimum() -> None:
    assert remaining_suspicion_time(0, 0, 1 * S, 2 * S, 30 * S) == 1 * S


@pytest.mark.parametrize(
    ("mult", "n", "expected"),
    [(3, 0, 0), (3, 1, 3), (3, 9, 3), (3, 10, 6), (3, 99, 6), (4, 100, 12), (4, 1000, 16)],
)
def test_retransmit_limit_is_mult_times_ceil_log10(mult: int, n: int, expected: int) -> None:
    assert retransmit_limit(mult, n) == expected


@pytest.mark.parametrize(
    ("lo", "hi", "factor"), [(0, 32, 1), (33, 64, 2), (65, 128, 3), (129, 256, 4)]
)
def test_push_pull_interval_grows_with_log2_past_32(lo: int, hi: int, factor: int) -> None:
    for n in range(lo, hi + 1):
        assert push_pull_interval(30 * S, n) == factor * 30 * S, n


def test_awareness_table() -> None:
    """memberlist's awareness_test: deltas applied in sequence, clamped to [0, max-1]."""
    table = [
        (0, 0, 1 * S),
        (-1, 0, 1 * S),
        (-10, 0, 1 * S),
        (1, 1, 2 * S),
        (-1, 0, 1 * S),
        (10, 7, 8 * S),
        (-1, 6, 7 * S),
        (-1, 5, 6 * S),
        (-1, 4, 5 * S),
        (-1, 3, 4 * S),
        (-1, 2, 3 * S),
        (-1, 1, 2 * S),
        (-1, 0, 1 * S),
        (-1, 0, 1 * S),
    ]
    a = Awareness(8)
    for i, (delta, score, timeout) in enumerate(table):
        a.apply_delta(delta)
        assert (a.score, a.scale(1 * S)) == (score, timeout), f"row {i}"


def test_awareness_with_max_one_is_off() -> None:
    a = Awareness(1)
    a.apply_delta(5)
    assert a.score == 0
    assert a.scale(500 * MS) == 500 * MS
    with pytest.raises(ValueError):
        Awareness(0)


def test_suspicion_confirmations_are_distinct_and_capped_at_k() -> None:
    s = Suspicion("a", k=3, minimum=2 * S, maximum=30 * S, start=100 * S)
    assert s.deadline == 130 * S
    assert not s.confirm("a")  # the origin does not confirm itself
    assert s.confirm("b")
    assert s.deadline == 100 * S + 16 * S
    assert not s.confirm("b")  # a repeated accuser is not independent
    assert s.confirm("c")
    assert s.deadline == 100 * S + 7810 * MS
    assert s.confirm("d")
    assert s.deadline == 102 * S
    assert not s.confirm("e")  # k reached: nothing more to shrink
    assert s.confirmations == 3


def test_suspicion_without_expected_confirmations_fires_at_the_minimum() -> None:
    s = Suspicion("a", k=0, minimum=2 * S, maximum=30 * S, start=0)
    assert s.deadline == 2 * S
    assert not s.confirm("b")
