"""The replicated KV state machine: commands, revisions, reads at a revision, watches, compaction,
snapshots (consensus.kv)."""

from __future__ import annotations

import pytest

from consensus.errors import DecodeError, LocalProtocolError
from consensus.kv import (
    SNAPSHOT_FORMAT,
    Cas,
    CasFailed,
    Compact,
    CompactedRevisionError,
    Delete,
    EventKind,
    FutureRevisionError,
    KeyValue,
    KvStore,
    Ok,
    Put,
    Rejected,
)
from consensus.kv_types import KV_SNAPSHOT_CODEC, Event, KvSnapshot, encode_command
from consensus.messages import Entry, EntryKind
from consensus.raft_snapshot import seal


def cmd(index: int, c: object) -> Entry:
    return Entry(index=index, term=1, data=encode_command(c))  # type: ignore[arg-type]


def test_put_sets_revisions_and_version() -> None:
    kv = KvStore()
    assert kv.apply_entry(cmd(1, Put("a", b"1"))) == Ok(1, None)
    assert kv.apply_entry(Entry(index=2, term=1, kind=EntryKind.NOOP)) is None
    r = kv.apply_entry(cmd(3, Put("a", b"2")))
    assert r == Ok(3, KeyValue("a", b"1", 1, 1, 1))
    assert kv.get("a") == KeyValue("a", b"2", create_revision=1, mod_revision=3, version=2)
    assert kv.revision == 3 and kv.applied_index == 3


def test_revision_is_the_index_of_the_last_change_only() -> None:
    kv = KvStore()
    kv.apply_entry(cmd(1, Put("a", b"1")))
    assert kv.apply_entry(cmd(2, Delete("missing"))) == Ok(1, None, changed=False)
    assert kv.apply_entry(cmd(3, Cas("a", 7, b"x"))) == CasFailed("a", 7, 1, 1)
    kv.apply_entry(Entry(index=4, term=2, kind=EntryKind.CONFIG, data=b"\x01"))
    kv.apply_entry(Entry(index=5, term=2))  # empty NORMAL entry: no-op
    assert kv.revision == 1 and kv.applied_index == 5


def test_cas_on_mod_revision() -> None:
    kv = KvStore()
    assert kv.apply_entry(cmd(1, Cas("k", 0, b"new"))) == Ok(1, None)  # 0 = only if absent
    assert kv.apply_entry(cmd(2, Cas("k", 0, b"again"))) == CasFailed("k", 0, 1, 1)
    assert isinstance(kv.apply_entry(cmd(3, Cas("k", 1, b"v2"))), Ok)
    assert kv.get("k") == KeyValue("k", b"v2", 1, 3, 2)
    kv.apply_entry(cmd(4, Delete("k")))
    assert kv.apply_entry(cmd(5, Cas("k", 3, b"x"))) == CasFailed("k", 3, 0, 4)
    assert kv.apply_entry(cmd(6, Cas("k", 0, b"reborn"))) == Ok(6, None)
    assert kv.get("k") == KeyValue("k", b"reborn", 6, 6, 1)  # version restarts after delete


def test_garbage_is_rejected_the_same_way_everywhere() -> None:
    a, b = KvStore(), KvStore()
    for kv in (a, b):
        r = kv.apply_entry(Entry(index=1, term=1, data=b"\xff\x00garbage"))
        assert isinstance(r, Rejected) and r.revision == 0
    assert a.snapshot() == b.snapshot()


def test_entries_apply_in_index_order() -> None:
    kv = KvStore()
    kv.apply_entry(cmd(1, Put("a", b"1")))
    with pytest.raises(LocalProtocolError):
        kv.apply_entry(cmd(3, Put("a", b"3")))
    with pytest.raises(LocalProtocolError):
        kv.apply_entry(cmd(1, Put("a", b"1")))


def test_reads_at_a_revision() -> None:
    kv = KvStore()
    kv.apply_entry(cmd(1, Put("app/a", b"1")))
    kv.apply_entry(cmd(2, Put("app/b", b"1")))
    kv.apply_entry(cmd(3, Put("other", b"1")))
    kv.apply_entry(cmd(4, Delete("app/a")))
    kv.apply_entry(cmd(5, Put("app/b", b"2")))
    assert kv.get("app/a", revision=3) == KeyValue("app/a", b"1", 1, 1, 1)
    assert kv.get("app/a", revision=4) is None
    assert kv.get("app/b", revision=1) is None
    assert [x.key for x in kv.range("app/", revision=3)] == ["app/a", "app/b"]
    assert [(x.key, x.value) for x in kv.range("app/")] == [("app/b", b"2")]
    assert [x.key for x in kv.range(revision=3, limit=2)] == ["app/a", "app/b"]
    with pytest.raises(FutureRevisionError):
        kv.get("app/a", revision=6)


def test_watch_by_prefix_from_a_revision() -> None:
    kv = KvStore()
    kv.apply_entry(cmd(1, Put("app/a", b"1")))
    kv.apply_entry(cmd(2, Put("x", b"1")))
    kv.apply_entry(cmd(3, Delete("app/a")))
    events = kv.watch("app/", since=1)
    assert [(e.kind, e.key, e.revision) for e in events] == [
        (EventKind.PUT, "app/a", 1),
        (EventKind.DELETE, "app/a", 3),
    ]
    assert events[1].prev == KeyValue("app/a", b"1", 1, 1, 1) and events[1].kv is None
    assert kv.watch("app/", since=4) == []
    assert [e.revision for e in kv.watch(since=2)] == [2, 3]


def test_compaction_makes_old_revisions_a_clear_error() -> None:
    kv = KvStore()
    for i in range(1, 6):
        kv.apply_entry(cmd(i, Put("k", b"%d" % i)))
    assert kv.apply_entry(cmd(6, Compact(4))) == Ok(5, None, changed=False)
    assert kv.compacted == 4
    assert kv.get("k", revision=4) == KeyValue("k", b"4", 1, 4, 4)
    with pytest.raises(CompactedRevisionError) as err:
        kv.get("k", revision=3)
    assert err.value.compacted == 4 and err.value.requested == 3
    with pytest.raises(CompactedRevisionError):
        kv.watch("k", since=2)
    with pytest.raises(CompactedRevisionError):
        kv.changed_keys(since=2)
    assert [e.revision for e in kv.watch("k", since=4)] == [4, 5]
    assert kv.changed_keys(since=4) == ["k", "k"] and kv.changed_keys(since=6) == []
    assert isinstance(kv.apply_entry(cmd(7, Compact(99))), Rejected)


def test_retain_compacts_automatically_and_deterministically() -> None:
    a, b = KvStore(retain=4), KvStore(retain=4)
    for kv in (a, b):
        for i in range(1, 30):
            kv.apply_entry(cmd(i, Put(f"k{i % 3}", b"v")))
    assert a.compacted > 0 and len(a.watch(since=a.compacted)) <= 5
    assert a.snapshot() == b.snapshot()
    with pytest.raises(CompactedRevisionError):
        a.watch(since=1)


def test_snapshot_restore_round_trip() -> None:
    kv = KvStore(retain=50)
    for i in range(1, 40):
        c = Put(f"k{i % 5}", b"%d" % i) if i % 7 else Delete(f"k{i % 5}")
        kv.apply_entry(cmd(i, c))
    data = kv.snapshot()
    back = KvStore.restore(data)
    assert back.snapshot() == data
    assert back.applied_index == 39 and back.revision == kv.revision
    assert back.range() == kv.range() and back.watch(since=1) == kv.watch(since=1)
    back.apply_entry(cmd(40, Put("new", b"x")))
    assert back.get("new") is not None


def test_restore_rejects_foreign_bytes() -> None:
    with pytest.raises(DecodeError):
        KvStore.restore(b"\x01garbage")


@pytest.mark.parametrize(
    ("kind", "kv", "prev"),
    [
        (EventKind.DELETE, None, None),
        (EventKind.PUT, None, "old"),
        (EventKind.DELETE, "new", "old"),
    ],
    ids=["delete-without-prev", "put-without-value", "delete-with-value"],
)
def test_restore_refuses_history_no_replica_records(kind, kv, prev) -> None:
    """The codec's schema allows these events; a store restored from them could not be
    snapshotted again (or would re-encode them as something else), so the install fails."""
    one = KeyValue("a", b"1", 1, 1, 1)
    values = {"old": one, "new": KeyValue("a", b"2", 1, 2, 2), None: None}
    history = (
        Event(EventKind.PUT, "a", 1, one, None),
        Event(kind, "a", 2, values[kv], values[prev]),
    )
    snap = KvSnapshot(SNAPSHOT_FORMAT, 2, 2, 0, 100, (), history)
    with pytest.raises(DecodeError, match="KV snapshot event at revision 2"):
        KvStore.restore(seal(KV_SNAPSHOT_CODEC.encode(snap)))


def test_a_capture_encodes_as_the_codec_does_and_ignores_later_applies() -> None:
    """The snapshot's fast encoding (packed straight from the values) gives the codec's bytes
    exactly; a capture keeps the state it was taken at while the store moves on."""
    kv = KvStore(retain=50)
    for i in range(1, 120):
        cmd = Delete(f"k{i % 9}") if i % 5 == 0 else Put(f"k{i % 9}", b"v%d" % i)
        kv.apply(i, encode_command(Cas("k1", 3, b"x") if i % 11 == 0 else cmd))
    cap = kv.capture()
    expected = seal(KV_SNAPSHOT_CODEC.encode(cap.snapshot()))
    kv.apply(120, encode_command(Put("later", b"1")))
    assert cap.encode() == expected == seal(KV_SNAPSHOT_CODEC.encode(cap.snapshot()))
    back = KvStore.restore(cap.encode())
    assert back.applied_index == 119 and back.get("later") is None
    assert kv.snapshot() != cap.encode()
