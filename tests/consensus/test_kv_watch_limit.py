"""A watch answer can be capped (``KvStore.watch(limit=, limit_bytes=)``): it ends at the end of a
revision, so a watcher resuming at the last event's revision + 1 sees every change exactly once
(a watch from an old revision must not build the whole history into one reply)."""

from __future__ import annotations

import random

import pytest

from consensus.kv import Batch, Delete, KvStore, Put, event_size
from consensus.kv_types import encode_command
from consensus.messages import Entry


def seeded_store(seed: int) -> KvStore:
    """A store after 300 entries: single puts and deletes, and batches of puts to several keys
    (one revision, several events), values of random sizes, keys under a few prefixes."""
    rng = random.Random(seed)
    kv = KvStore()
    keys = [f"{p}/{i}" for p in ("a", "ab", "b") for i in range(6)] + ["a"]
    for index in range(1, 301):

        def value() -> bytes:
            return bytes(rng.randrange(256) for _ in range(rng.choice((0, 3, 40, 900))))

        roll = rng.random()
        if roll < 0.3:
            chosen = rng.sample(keys, rng.randint(2, 6))
            c: object = Batch(tuple(encode_command(Put(k, value())) for k in chosen))
        elif roll < 0.4:
            c = Delete(rng.choice(keys))
        else:
            c = Put(rng.choice(keys), value())
        kv.apply_entry(Entry(index=index, term=1, data=encode_command(c)))  # type: ignore[arg-type]
    return kv


def resume_all(kv: KvStore, prefix: str, exact: bool, limit: int | None, limit_bytes: int | None):  # type: ignore[no-untyped-def]
    """Page through the history as a watcher does: since = last event's revision + 1."""
    since, seen, pages = 0, [], 0
    while True:
        page = kv.watch(prefix, since, exact=exact, limit=limit, limit_bytes=limit_bytes)
        if not page:
            return seen, pages
        pages += 1
        revs = [e.revision for e in page]
        assert revs == sorted(revs)
        if limit is not None:
            # over the limit only to finish the last event's revision
            assert len([r for r in revs if r != revs[-1]]) < limit
        if limit_bytes is not None:
            assert sum(event_size(e) for e in page if e.revision != revs[-1]) < limit_bytes
        seen += page
        since = revs[-1] + 1


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize(
    ("prefix", "exact"), [("", False), ("a", False), ("ab/", False), ("a", True), ("b/3", True)]
)
def test_paging_a_capped_watch_sees_every_change_once(seed: int, prefix: str, exact: bool) -> None:
    kv = seeded_store(seed)
    everything = kv.watch(prefix, 0, exact=exact)
    if exact:
        assert all(e.key == prefix for e in everything)
    for limit, limit_bytes in ((1, None), (7, None), (None, 2000), (5, 500)):
        seen, pages = resume_all(kv, prefix, exact, limit, limit_bytes)
        assert seen == everything, f"seed {seed}, limits {limit}/{limit_bytes}"
        if len({e.revision for e in everything}) > 1 and limit == 1:
            assert pages > 1


def test_one_revision_is_never_split_even_over_the_limit() -> None:
    kv = KvStore()
    kv.apply_entry(
        Entry(
            index=1,
            term=1,
            data=encode_command(Batch(tuple(encode_command(Put(f"k{i}", b"v")) for i in range(5)))),
        )
    )  # type: ignore[arg-type]
    kv.apply_entry(Entry(index=2, term=1, data=encode_command(Put("k9", b"v"))))  # type: ignore[arg-type]
    page = kv.watch("", 0, limit=2)
    assert [e.revision for e in page] == [1] * 5
