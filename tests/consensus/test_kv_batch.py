"""``Batch`` entries of the KV machine: several commands on distinct keys applied as one entry
at one revision, and a batch that breaks the rules rejected whole by every replica alike."""

from __future__ import annotations

import random

import pytest

from consensus.kv import Batch, Batched, Cas, CasFailed, Compact, Delete, KvStore, Ok, Put, Rejected
from consensus.kv_batch import entry_data, group_commands
from consensus.kv_types import MAX_BATCH_COMMANDS, decode_batch, decode_command, encode_command
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
    """Random batches applied decoded (the leader's ``apply_batch``) and from their entries
    (a follower's ``apply_entry``) give the same results and the same snapshot bytes."""
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    leader, follower = KvStore(retain=50), KvStore(retain=50)
    for index in range(1, 200):
        keys = rng.sample([f"k{i}" for i in range(30)], rng.randint(1, 12))
        cmds = []
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
        mine = leader.apply_batch(index, cmds)
        theirs = follower.apply_entry(entry(index, Batch(tuple(encode_command(c) for c in cmds))))
        assert mine == theirs, f"seed {seed}, entry {index}"
    assert leader.snapshot() == follower.snapshot(), f"seed {seed}"


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
