"""Property tests of the KV state machine against a plain reference model: any sequence of
entries gives the same state on replay (byte for byte), snapshots round-trip at any point, reads
at every retained revision match the model's history, and watch events replayed over an old
state give the current one."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.kv import (
    Cas,
    CasFailed,
    Compact,
    Delete,
    EventKind,
    KeyValue,
    KvStore,
    Ok,
    Put,
    Rejected,
)
from consensus.kv_types import encode_command
from consensus.messages import Entry, EntryKind

KEYS = ["a", "a/b", "a/c", "b", "bb"]


@dataclass
class Model:
    """The obvious implementation: a dict, plus a full copy of it at every revision."""

    keys: dict[str, KeyValue]
    at: dict[int, dict[str, KeyValue]]
    revision: int = 0

    def apply(self, index: int, c: object) -> object:
        cur = self.keys
        if isinstance(c, Put | Cas):
            old = cur.get(c.key)
            if isinstance(c, Cas) and (old.mod_revision if old else 0) != c.expected:
                return "cas-failed"
            ver = old.version + 1 if old else 1
            cur[c.key] = KeyValue(c.key, c.value, old.create_revision if old else index, index, ver)
        elif isinstance(c, Delete):
            if cur.pop(c.key, None) is None:
                return "unchanged"
        else:
            return "other"
        self.revision = index
        self.at[index] = dict(cur)
        return "changed"


commands = st.one_of(
    st.builds(Put, st.sampled_from(KEYS), st.binary(max_size=3)),
    st.builds(Delete, st.sampled_from(KEYS)),
    st.builds(Cas, st.sampled_from(KEYS), st.integers(0, 12), st.binary(max_size=3)),
    st.builds(Compact, st.integers(0, 12)),
    st.just("noop"),
    st.just("garbage"),
)


def to_entries(cmds: list[object]) -> list[Entry]:
    out = []
    for i, c in enumerate(cmds, start=1):
        if c == "noop":
            out.append(Entry(index=i, term=1, kind=EntryKind.NOOP))
        elif c == "garbage":
            out.append(Entry(index=i, term=1, data=b"\xee\x01"))
        else:
            out.append(Entry(index=i, term=1, data=encode_command(c)))  # type: ignore[arg-type]
    return out


@settings(max_examples=150, deadline=None)
@given(st.lists(commands, max_size=40), st.integers(1, 12))
def test_replay_gives_the_same_state_and_results(cmds: list[object], retain: int) -> None:
    entries = to_entries(cmds)
    a, b = KvStore(retain=retain), KvStore(retain=retain)
    ra = [a.apply_entry(e) for e in entries]
    rb = [b.apply_entry(e) for e in entries]
    assert ra == rb
    assert a.snapshot() == b.snapshot()


@settings(max_examples=150, deadline=None)
@given(st.lists(commands, max_size=40), st.data())
def test_snapshot_restore_round_trip_at_any_point(cmds: list[object], data: st.DataObject) -> None:
    entries = to_entries(cmds)
    cut = data.draw(st.integers(0, len(entries)), label="cut")
    whole = KvStore(retain=6)
    for e in entries:
        whole.apply_entry(e)
    part = KvStore(retain=6)
    for e in entries[:cut]:
        part.apply_entry(e)
    restored = KvStore.restore(part.snapshot())
    assert restored.snapshot() == part.snapshot()
    for e in entries[cut:]:
        restored.apply_entry(e)
    assert restored.snapshot() == whole.snapshot()


@settings(max_examples=150, deadline=None)
@given(st.lists(commands, max_size=40))
def test_state_reads_and_watches_match_the_model(cmds: list[object]) -> None:
    kv = KvStore(retain=1000)
    model = Model({}, {0: {}})
    for e, c in zip(to_entries(cmds), cmds, strict=True):
        got = kv.apply_entry(e)
        if c in ("noop", "garbage"):
            assert got is None if c == "noop" else isinstance(got, Rejected)
            continue
        want = model.apply(e.index, c)
        if want == "cas-failed":
            assert isinstance(got, CasFailed)
        elif isinstance(c, Compact):
            assert isinstance(got, Ok | Rejected) and not getattr(got, "changed", False)
        else:
            assert isinstance(got, Ok) and got.changed == (want == "changed")
            assert got.revision == model.revision
    assert kv.revision == model.revision
    assert {x.key: x for x in kv.range()} == model.keys
    # every revision still readable matches the model's copy at the last change at or before it
    for rev in range(kv.compacted, kv.revision + 1):
        last = max(r for r in model.at if r <= rev)
        assert {x.key: x for x in kv.range(revision=rev)} == model.at[last], rev
        for key in KEYS:
            assert kv.get(key, revision=rev) == model.at[last].get(key)
        # replaying the watch from rev+1 over the state at rev gives the current state
        state = dict(model.at[last])
        for ev in kv.watch(since=rev + 1):
            assert ev.prev == state.get(ev.key)
            if ev.kind is EventKind.PUT:
                assert ev.kv is not None and ev.kv.mod_revision == ev.revision
                state[ev.key] = ev.kv
            else:
                del state[ev.key]
        assert state == model.keys
    for prefix in ("a", "a/", "b", "z"):
        assert [x.key for x in kv.range(prefix)] == sorted(
            k for k in model.keys if k.startswith(prefix)
        )
        assert all(ev.key.startswith(prefix) for ev in kv.watch(prefix, since=kv.compacted))
