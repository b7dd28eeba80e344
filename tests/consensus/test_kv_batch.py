"""``Batch`` entries of the KV machine: several commands on distinct keys applied as one entry
at one revision, and a batch that breaks the rules rejected whole by every replica alike."""

from __future__ import annotations

import random
from collections.abc import Callable

import msgpack
import pytest

from consensus.errors import DecodeError, EncodeError
from consensus.kv import Batch, Batched, Cas, CasFailed, Compact, Delete, KvStore, Ok, Put, Rejected
from consensus.kv_batch import entry_data, group_commands
from consensus.kv_types import (
    KV_CODEC,
    MAX_BATCH_COMMANDS,
    MAX_COMMAND_BYTES,
    decode_batch,
    decode_command,
    encode_batch,
    encode_command,
)
from consensus.messages import Entry


def entry(index: int, c: object) -> Entry:
    return Entry(index=index, term=1, data=encode_command(c))  # type: ignore[arg-type]


def batch(*cmds: object) -> Batch:
    return Batch(tuple(encode_command(c) for c in cmds))  # type: ignore[arg-type]


def test_a_batch_applies_its_commands_in_order_at_the_entry_revision() -> None:
    kv = KvStore()
    kv.apply_entry(entry(1, Put("a", b"1")))
    kv.apply_entry(entry(2, Put("gone", b"x")))
    got = kv.apply_entry(entry(3, batch(Put("a", b"2"), Cas("b", 0, b"new"), Delete("gone"),
                                        Cas("c", 7, b"no"), Delete("absent"))))  # fmt: skip
    assert isinstance(got, Batched)
    put, cas, delete, cas_failed, no_op = got.results
    assert put == Ok(3, kv.get("a", revision=1))
    assert cas == Ok(3, None)
    assert isinstance(delete, Ok) and delete.prev is not None and delete.prev.value == b"x"
    assert cas_failed == CasFailed("c", 7, 0, 3)
    assert no_op == Ok(3, None, changed=False)
    assert kv.revision == 3 and kv.applied_index == 3
    assert [(e.key, e.revision) for e in kv.watch("", 3)] == [("a", 3), ("b", 3), ("gone", 3)]
    assert kv.get("a", revision=2).value == b"1"  # type: ignore[union-attr]
    assert kv.get("gone", revision=2) is not None and kv.get("gone") is None
    assert kv.get("b").mod_revision == 3  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "bad, why",
    [
        (Batch(()), "1 to"),
        (batch(Put("a", b"1"), Put("a", b"2")), "twice"),
        (batch(Put("a", b"1"), Compact(0)), "only puts"),
        (Batch((encode_command(batch(Put("a", b"1"))),)), "only puts"),
        (Batch((b"\xffgarbage",)), "not a KV command"),
        (batch(*(Put(f"k{i}", b"") for i in range(MAX_BATCH_COMMANDS + 1))), "1 to"),
    ],
)
def test_a_batch_that_breaks_the_rules_is_rejected_whole(bad: Batch, why: str) -> None:
    kv = KvStore()
    kv.apply_entry(entry(1, Put("a", b"0")))
    got = kv.apply_entry(entry(2, bad))
    assert isinstance(got, Rejected) and why in got.reason and got.revision == 1
    assert kv.applied_index == 2 and kv.revision == 1 and kv.watch("", 2) == []
    assert [(x.key, x.value) for x in kv.items()] == [("a", b"0")]


def test_the_proposer_applying_its_own_batch_ends_in_the_replicas_state() -> None:
    """Random batches applied decoded (the leader's ``apply_batch``), from their entries (a
    replica's ``apply_entry``) and quietly (a follower's ``apply_entry_quietly``: no results)
    give the same results, result counts and snapshot bytes; a batch that breaks the rules, a
    lone command and a no-op entry count as one result everywhere."""
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    leader, replica, quiet = KvStore(retain=50), KvStore(retain=50), KvStore(retain=50)
    plain = KvStore(retain=50)  # each command through the general path, one call each
    for index in range(1, 300):
        keys = rng.sample([f"k{i}" for i in range(30)], rng.randint(1, 12))
        cmds: list[Put | Delete | Cas] = []
        for k in keys:
            cur = leader.get(k)
            choice = rng.random()
            if choice < 0.5:
                cmds.append(Put(k, rng.randbytes(4)))
            elif choice < 0.7:
                cmds.append(Delete(k))
            else:
                expected = cur.mod_revision if cur and rng.random() < 0.7 else rng.randint(0, 9)
                cmds.append(Cas(k, expected, rng.randbytes(4)))
        shape = rng.random()
        if shape < 0.85:
            e = entry(index, Batch(tuple(encode_command(c) for c in cmds)))
            mine: object = leader.apply_batch(index, cmds)
            plain._advance(index)
            assert mine == Batched(tuple(plain._execute(index, c) for c in cmds)), f"seed {seed}"
        elif shape < 0.9:  # a batch that repeats a key: rejected whole
            e = entry(index, Batch(tuple(encode_command(c) for c in [*cmds, cmds[0]])))
            mine = leader.apply_entry(e)
            assert isinstance(mine, Rejected), f"seed {seed}, entry {index}"
            plain.apply_entry(e)
        elif shape < 0.95:
            e = entry(index, cmds[0])
            mine = leader.apply_command(index, cmds[0])
            plain.apply_entry(e)
        else:
            e = Entry(index=index, term=1)
            mine = leader.apply_entry(e)
            plain.apply_entry(e)
        revision = replica.revision
        theirs = replica.apply_entry(e)
        assert mine == theirs, f"seed {seed}, entry {index}"
        count = len(theirs.results) if isinstance(theirs, Batched) else 1
        assert quiet.apply_entry_quietly(e) == count, f"seed {seed}, entry {index}"
        assert quiet.changed_keys(revision + 1) == [
            ev.key for ev in replica.watch("", revision + 1)
        ]
    assert leader.snapshot() == replica.snapshot() == quiet.snapshot() == plain.snapshot(), seed
    assert leader.compacted > 0, seed  # the history was trimmed along the way


# --- which proposals share an entry -------------------------------------------------------


def _cmds(*cmds: Put | Delete | Compact) -> list[tuple[Put | Delete | Compact, bytes]]:
    return [(c, encode_command(c)) for c in cmds]


def test_writes_group_by_distinct_keys_in_order() -> None:
    cmds = _cmds(Put("a", b"1"), Put("b", b"2"), Delete("c"), Put("a", b"3"), Put("b", b"4"))
    assert group_commands(cmds) == [[0, 1, 2], [3, 4]]  # "a" again starts the next entry


def test_a_command_that_may_not_be_batched_goes_alone() -> None:
    cmds = _cmds(Put("a", b"1"), Compact(3), Put("b", b"2"), Put("c", b"3"))
    assert group_commands(cmds) == [[0], [1], [2, 3]]
    raw = [(None, b"only bytes"), *_cmds(Put("a", b"1"))]  # a command known by its bytes alone
    assert group_commands(raw) == [[0], [1]]


def test_group_size_and_bytes_are_capped() -> None:
    cmds = _cmds(*(Put(f"k{i}", b"v") for i in range(7)))
    assert group_commands(cmds, max_commands=3) == [[0, 1, 2], [3, 4, 5], [6]]
    size = len(cmds[0][1]) + 5
    assert group_commands(cmds, max_bytes=2 * size) == [[0, 1], [2, 3], [4, 5], [6]]


def test_entry_data_is_the_plain_command_alone_and_a_batch_otherwise() -> None:
    one = encode_command(Put("a", b"1"))
    assert entry_data([one]) == one
    two = [one, encode_command(Delete("b"))]
    batch = decode_command(entry_data(two))
    assert isinstance(batch, Batch)
    assert decode_batch(batch) == [Put("a", b"1"), Delete("b")]


# --- the direct Put encoding and decoding -------------------------------------------------


def test_puts_encode_and_decode_as_the_codec_does_whatever_the_bytes() -> None:
    """``encode_command`` packs a ``Put`` itself and ``decode_batch`` unpacks one itself: the
    bytes and values are the codec's, and any corrupted command gives the codec's outcome
    (the same command, or a batch rejected with the same reason)."""
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    for n in range(250):
        key = "".join(rng.choice("ab/é🙂\x00") for _ in range(rng.randint(0, 40)))
        value = rng.randbytes(rng.choice([0, 1, 31, 32, 255, 256, 65535, 65536]))
        put = Put(key, value)
        data = encode_command(put)
        assert data == KV_CODEC.encode(put), f"seed {seed}, put {n}"
        corrupt = bytearray(data)
        for _ in range(rng.randint(0, 3)):
            corrupt[rng.randrange(len(corrupt))] = rng.randrange(256)
        cut = bytes(corrupt)[: rng.choice([len(corrupt), rng.randrange(len(corrupt) + 1)])]
        for b in (Batch((data,)), Batch((data, cut)), Batch((cut,))):
            try:
                want: object = [KV_CODEC.decode(d) for d in b.commands]
                keys = [getattr(c, "key", None) for c in want]  # type: ignore[attr-defined]
                if None in keys or len(set(keys)) < len(keys):
                    want = "rejected"
            except DecodeError as e:
                want = e.reason
            try:
                got: object = decode_batch(b)
            except DecodeError as e:
                got = "rejected" if "twice" in e.reason or "only puts" in e.reason else e.reason
            assert got == want, f"seed {seed}, put {n}: {b!r}"
        frame = encode_batch([data, cut]) if rng.random() < 0.5 else cut
        broken = bytearray(frame)
        for _ in range(rng.randint(0, 2) if broken else 0):
            broken[rng.randrange(len(broken))] = rng.randrange(256)
        for d in (frame, bytes(broken), bytes(broken[: rng.randrange(len(broken) + 1)])):
            assert _outcome(decode_command, d) == _outcome(KV_CODEC.decode, d), f"seed {seed}"
    crafted = [b"\x01", b"\x01\xc1", msgpack.packb(["k", b"v"]), b"\x01" + msgpack.packb(["k"]),
               *(b"\x01" + msgpack.packb(body, use_bin_type=True) for body in
                 (["k", b"v", 1], [b"k", b"v"], ["k", "v"], [1, b"v"], ["k", None], {"k": b"v"},
                  "k", [["k"], b"v"], ["k", b"v"]))]  # fmt: skip
    batches = ([[b"a", b"b"]], [[]], [[b"a", "b"]], [b"a"], [[b"a"], 1], [(b"a",)], "x")
    crafted.append(crafted[-1] + b"\x00")  # trailing bytes
    frames = [b"\x05" + msgpack.packb(body, use_bin_type=True) for body in batches]
    for d in [*crafted, *frames, frames[0] + b"\x00"]:
        assert _outcome(decode_command, d) == _outcome(KV_CODEC.decode, d), d
    for d in crafted:
        try:
            want = KV_CODEC.decode(d)
        except DecodeError as e:
            want = e.reason  # type: ignore[assignment]
        try:
            got = decode_batch(Batch((d,)))[0]
        except DecodeError as e:
            got = e.reason  # type: ignore[assignment]
        assert got == want, d
    for n in (0, 1, 2, 17, 1024):  # a batch of encoded commands: the codec's bytes too
        datas = [encode_command(Put(f"k{i}", rng.randbytes(rng.randrange(300)))) for i in range(n)]
        assert encode_batch(datas) == KV_CODEC.encode(Batch(tuple(datas))), f"seed {seed}"
        assert encode_batch(tuple(datas)) == entry_data(datas) or n == 1
    with pytest.raises(EncodeError):  # not bytes: the codec's error
        encode_batch([b"a", bytearray(b"b")])  # type: ignore[list-item]
    with pytest.raises(EncodeError):  # over the limit: the codec's error
        encode_batch([bytes(MAX_COMMAND_BYTES // 2)] * 3)
    with pytest.raises(EncodeError):
        encode_command(Put("k", bytes(MAX_COMMAND_BYTES)))
    assert encode_command(Put("k", b"v")) == b"\x01" + msgpack.packb(["k", b"v"])


def _outcome(decode: Callable[[bytes], object], data: bytes) -> object:
    """What ``decode`` gives for ``data``: the value, or the reason of its ``DecodeError``."""
    try:
        return decode(data)
    except DecodeError as e:
        return e.reason
