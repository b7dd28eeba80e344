"""MemoryStorage: the Storage contract the Raft core reads, and the driver's writes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.errors import (
    CompactedError,
    LocalProtocolError,
    SnapshotOutOfDateError,
    SnapshotUnavailableError,
    UnavailableError,
)
from consensus.messages import ConfState, Entry, HardState, Snapshot, SnapshotMeta, entry_size
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


def test_create_snapshot_then_compact_keeps_the_tail_and_the_term_before_it() -> None:
    st = MemoryStorage(conf_state=ConfState(("a",)))
    st.append(ents(1, 1, 2, 2, 3))
    snap = st.create_snapshot(4, ConfState(("a", "b"), ("c",)), b"state")
    assert snap == Snapshot(SnapshotMeta(4, 2, ConfState(("a", "b"), ("c",))), b"state")
    assert st.snapshot() == snap
    assert st.first_index() == 1  # nothing dropped until compact
    st.compact(3)
    assert (st.first_index(), st.last_index(), st.term(3)) == (4, 5, 2)
    assert [e.index for e in st.entries(4, 6)] == [4, 5]
    with pytest.raises(CompactedError):
        st.entries(3, 5)
    with pytest.raises(CompactedError):
        st.term(2)
    st.compact(2)  # already compacted: no-op
    assert st.first_index() == 4
    # The membership a restarted node starts from is the snapshot's.
    assert st.initial_state()[1] == ConfState(("a", "b"), ("c",))


def test_snapshot_and_compaction_misuse_raise_typed_errors() -> None:
    st = MemoryStorage()
    st.append(ents(1, 1, 1))
    with pytest.raises(UnavailableError):
        st.create_snapshot(4, ConfState(), b"")
    with pytest.raises(LocalProtocolError, match="snapshot"):
        st.compact(2)  # no snapshot covers it
    st.create_snapshot(2, ConfState(), b"")
    with pytest.raises(SnapshotOutOfDateError):
        st.create_snapshot(2, ConfState(), b"")
    with pytest.raises(UnavailableError):
        st.compact(9)


def test_apply_snapshot_replaces_the_log() -> None:
    st = MemoryStorage()
    st.append(ents(1, 1, 1))
    snap = Snapshot(SnapshotMeta(10, 4, ConfState(("x", "y"))), b"s")
    st.apply_snapshot(snap)
    assert (st.first_index(), st.last_index(), st.term(10)) == (11, 10, 4)
    assert st.all_entries() == []
    assert st.snapshot() == snap and st.initial_state()[1] == ConfState(("x", "y"))
    st.append(ents(4, 4, start=11))
    assert st.last_index() == 12
    st.append(ents(4, start=9))  # entries the snapshot covers are skipped
    assert st.last_index() == 12
    with pytest.raises(SnapshotOutOfDateError):
        st.apply_snapshot(snap)


@settings(deadline=None)  # timings never gate a unit test
@given(st.lists(st.integers(0, 40), max_size=8), st.integers(1, 40))
def test_compaction_never_changes_what_remains(points: list[int], length: int) -> None:
    """Model check: after any snapshots and compactions, every index at or after the first
    one reads exactly as before."""
    storage = MemoryStorage()
    log = [Entry(i, 1 + i // 7, data=b"%d" % i) for i in range(1, length + 1)]
    storage.append(log)
    for p in sorted(points):
        if p <= storage.snapshot_index() or p > length:
            continue
        storage.create_snapshot(p, ConfState(), b"")
        storage.compact(p)
    first = storage.first_index()
    assert storage.entries(first, length + 1) == log[first - 1 :]
    assert storage.term(first - 1) == (log[first - 2].term if first > 1 else 0)


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
