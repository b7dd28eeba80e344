"""The KV history is bounded in bytes as well as in changes (``KvStore(retain_bytes=)``): many
writes of large values must not fill a device's memory before ``retain`` changes accumulate."""

from __future__ import annotations

import random

import pytest

from consensus.kv import Batch, CompactedRevisionError, Delete, KvStore, Put
from consensus.kv_types import encode_command
from consensus.messages import Entry


def apply(kv: KvStore, index: int, c: object) -> None:
    kv.apply_entry(Entry(index=index, term=1, data=encode_command(c)))  # type: ignore[arg-type]


def test_large_values_are_trimmed_by_bytes_long_before_retain_changes() -> None:
    kv = KvStore(retain=10_000, retain_bytes=1_000_000)
    for index in range(1, 1501):  # one key, 64 KiB each: 96 MB written, 64 KiB live
        apply(kv, index, Put("k", bytes(65_536)))
    assert kv.history_bytes <= 1_250_000  # retain_bytes plus the slack
    assert kv.compacted > 1400 and kv.get("k").mod_revision == 1500  # type: ignore[union-attr]
    with pytest.raises(CompactedRevisionError):
        kv.watch("k", since=1)
    assert [e.revision for e in kv.watch("k", since=1500)] == [1500]


@pytest.mark.parametrize("seed", range(8))
def test_byte_trimming_is_a_function_of_the_entries(seed: int) -> None:
    """Replicas agree: the same entries give the same history and snapshot bytes, with the
    history's byte count exact at every step and whole revisions trimmed (batches included)."""
    rng = random.Random(seed)
    a, b = KvStore(retain=50, retain_bytes=5_000), KvStore(retain=50, retain_bytes=5_000)
    for index in range(1, 400):
        roll = rng.random()
        if roll < 0.3:
            puts = [Put(f"k{i}", bytes(rng.randrange(900))) for i in rng.sample(range(9), 3)]
            c: object = Batch(tuple(encode_command(p) for p in puts))
        elif roll < 0.4:
            c = Delete(f"k{rng.randrange(9)}")
        else:
            c = Put(f"k{rng.randrange(9)}", bytes(rng.randrange(1500)))
        apply(a, index, c)
        apply(b, index, c)
        events = a.watch("", a.compacted)
        assert a.history_bytes == sum(len(e.kv.value) for e in events if e.kv), f"seed {seed}"
        assert a.history_bytes <= 5_000 * 1.25 + 1500 * 3, f"seed {seed}"
        assert not events or events[0].revision >= a.compacted
    assert a.snapshot() == b.snapshot()
    restored = KvStore.restore(a.snapshot())
    assert restored.history_bytes == a.history_bytes


def test_a_restored_store_keeps_trimming_as_the_original() -> None:
    """review11 L2: ``retain_bytes`` is a local setting, not in the snapshot; restored with it,
    a store goes on exactly as the one the snapshot was taken from."""
    rng = random.Random(5)
    a = KvStore(retain=1000, retain_bytes=5_000)
    puts = [Put(f"k{rng.randrange(5)}", bytes(rng.randrange(800))) for _ in range(400)]
    for index, c in enumerate(puts[:200], start=1):
        apply(a, index, c)
    b = KvStore.restore(a.snapshot(), retain_bytes=5_000)
    for index, c in enumerate(puts[200:], start=201):
        apply(a, index, c)
        apply(b, index, c)
    assert a.snapshot() == b.snapshot() and a.compacted == b.compacted
