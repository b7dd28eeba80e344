"""MemoryStorage: the Storage contract the Raft core reads, and the driver's writes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.errors import CompactedError, SnapshotUnavailableError, UnavailableError
from consensus.messages import ConfState, Entry, HardState, entry_size
from consensus.storage import MemoryStorage, limit_size


def ents(*terms: int, start: int = 1) -> list[Entry]:
    return [Entry(start + i, t, data=bytes([i % 256])) for i, t in enumerate(terms)]


def test_empty_storage() -> None:
    st = MemoryStorage()
    assert (st.first_index(), st.last_index(), st.term(0)) == (1, 0, 0)
    assert st.initial_state() == (HardState(), ConfState())
    assert st.entries(1, 1) == []
    with pytest.raises(SnapshotUnavailableError):
        st.snapshot()


def test_append_then_read_entries_and_terms() -> None:
    st = MemoryStorage()
    st.append(ents(1, 1, 2))
    assert st.last_index() == 3
    assert [st.term(i) for i in range(4)] == [0, 1, 1, 2]
    assert st.entries(2, 4) == st.all_entries()[1:3]
    assert [e.term for e in st.entries(2, 4)] == [1, 2]


def test_append_truncates_a_conflicting_suffix() -> None:
    st = MemoryStorage()
    st.append(ents(1, 1, 2, 2))
    st.append(ents(3, 3, start=3))
    assert [e.term for e in st.all_entries()] == [1, 1, 3, 3]
    st.append(ents(4, start=2))
    assert [e.term for e in st.all_entries()] == [1, 4]


def test_append_with_a_gap_is_refused() -> None:
    st = MemoryStorage()
    st.append(ents(1))
    with pytest.raises(UnavailableError):
        st.append(ents(1, start=5))


def test_out_of_range_reads_raise_typed_errors() -> None:
    st = MemoryStorage()
    st.append(ents(1, 1))
    with pytest.raises(UnavailableError):
        st.term(3)
    with pytest.raises(UnavailableError):
        st.entries(1, 4)
    with pytest.raises(CompactedError):
        st.entries(0, 2)
    with pytest.raises(CompactedError):
        st.term(-1)


def test_max_bytes_cuts_but_never_returns_nothing() -> None:
    st = MemoryStorage()
    st.append([Entry(i, 1, data=b"x" * 100) for i in range(1, 6)])
    one = entry_size(Entry(1, 1, data=b"x" * 100))
    assert len(st.entries(1, 6, max_bytes=1)) == 1
    assert len(st.entries(1, 6, max_bytes=2 * one)) == 2
    assert len(st.entries(1, 6, max_bytes=2 * one + 1)) == 2
    assert len(st.entries(1, 6)) == 5


def test_hard_and_conf_state_are_kept() -> None:
    st = MemoryStorage()
    st.set_hard_state(HardState(3, "a", 2))
    st.set_conf_state(ConfState(("a", "b", "c")))
    assert st.initial_state() == (HardState(3, "a", 2), ConfState(("a", "b", "c")))


@settings(deadline=None)  # timings never gate a unit test
@given(st.lists(st.tuples(st.integers(1, 8), st.integers(1, 4)), max_size=30))
def test_appends_behave_like_list_truncate_and_extend(ops: list[tuple[int, int]]) -> None:
    """Model check: every append = truncate at its first index, then extend."""
    storage = MemoryStorage()
    model: list[Entry] = []
    for start, count in ops:
        start = min(start, len(model) + 1)
        term = (model[start - 2].term if start > 1 else 1) + 1
        batch = [Entry(start + k, term, data=b"%d" % k) for k in range(count)]
        storage.append(batch)
        model = model[: start - 1] + batch
        assert storage.all_entries() == model
        assert storage.last_index() == len(model)


@settings(deadline=None)  # timings never gate a unit test
@given(st.lists(st.integers(0, 50), max_size=10), st.integers(0, 200))
def test_limit_size_returns_a_nonempty_prefix_within_budget(sizes: list[int], budget: int) -> None:
    es = [Entry(i + 1, 1, data=b"x" * n) for i, n in enumerate(sizes)]
    out = limit_size(es, budget)
    assert out == es[: len(out)]
    if es:
        assert out
        assert len(out) == 1 or sum(map(entry_size, out)) <= budget
