"""Self-tests of the linearizability checker: known non-linearizable histories (stale read, lost
write, double CAS success, reads at a revision that contradict the writes) are caught; known
good ones, including unknown outcomes and histories linearizable by construction, pass; a
search that runs out of budget says so."""

from __future__ import annotations

import random

import pytest

from sim.linearizability import Operation, Verdict, check

_ids = iter(range(10**9))


def put(key: str, value: bytes, call: int, ret: int | None, index: int, client: int = 0):
    return Operation(next(_ids), client, "put", key, call, ret, value=value, index=index)


def delete(key: str, call: int, ret: int | None, index: int, client: int = 0):
    return Operation(next(_ids), client, "delete", key, call, ret, index=index)


def cas(key, expected, value, call, ret, index, ok=None, current=None, client=0):
    return Operation(
        next(_ids), client, "cas", key, call, ret, value=value, expected=expected, index=index,
        ok=ok, current=current,
    )  # fmt: skip


def get(key, call, ret, value, mod, revision=None, client=1, kind="get"):
    return Operation(
        next(_ids), client, kind, key, call, ret, result=(value, mod), revision=revision
    )


def rng_(key, call, ret, items, revision, client=1):
    return Operation(next(_ids), client, "range", key, call, ret, items=items, revision=revision)


def test_sequential_history_passes() -> None:
    h = [
        put("k", b"1", 0, 10, index=1),
        get("k", 20, 30, b"1", 1, revision=1),
        cas("k", 1, b"2", 40, 50, index=2, ok=True),
        cas("k", 1, b"3", 60, 70, index=3, ok=False, current=2),
        get("k", 80, 90, b"2", 2),
        delete("k", 100, 110, index=4),
        get("k", 120, 130, None, 0, revision=4),
    ]
    res = check(h)
    assert res.ok, res.report()


def test_concurrent_writes_may_be_seen_in_either_order() -> None:
    a = put("k", b"a", 0, 100, index=2, client=0)
    b = put("k", b"b", 10, 90, index=1, client=2)
    # raft placed b first (index 1), then a (index 2): reads during the overlap may see b then a
    h = [a, b, get("k", 20, 40, b"b", 1), get("k", 50, 95, b"a", 2), get("k", 120, 130, b"a", 2)]
    assert check(h).ok


def test_stale_read_is_caught() -> None:
    h = [
        put("k", b"1", 0, 10, index=1),
        put("k", b"2", 20, 30, index=2),
        get("k", 40, 50, b"1", 1),  # after the second write returned: stale
    ]
    res = check(h)
    assert res.verdict is Verdict.VIOLATION, res.report()
    assert "'k'" in res.report()


def test_lost_write_is_caught() -> None:
    h = [put("k", b"1", 0, 10, index=1), get("k", 20, 30, None, 0)]
    assert check(h).verdict is Verdict.VIOLATION


def test_double_cas_success_is_caught() -> None:
    h = [
        put("k", b"0", 0, 10, index=1),
        cas("k", 1, b"a", 20, 60, index=2, ok=True, client=1),
        cas("k", 1, b"b", 30, 70, index=3, ok=True, client=2),
    ]
    assert check(h).verdict is Verdict.VIOLATION
    # one success and one failure that saw the winner is fine
    h[2] = cas("k", 1, b"b", 30, 70, index=3, ok=False, current=2, client=2)
    assert check(h).ok


def test_cas_failure_reporting_a_wrong_current_revision_is_caught() -> None:
    h = [put("k", b"0", 0, 10, index=1), cas("k", 5, b"x", 20, 30, index=2, ok=False, current=7)]
    assert check(h).verdict is Verdict.VIOLATION


def test_unknown_write_may_take_effect_late_or_never() -> None:
    lost = put("k", b"1", 0, None, index=1)
    assert check([lost, get("k", 500, 510, None, 0)]).ok  # never
    late = put("k", b"1", 0, None, index=1)
    assert check([late, get("k", 500, 510, None, 0), get("k", 600, 610, b"1", 1)]).ok  # late
    # but once seen it cannot be undone
    gone = put("k", b"1", 0, None, index=1)
    h = [gone, get("k", 500, 510, b"1", 1), get("k", 600, 610, None, 0)]
    assert check(h).verdict is Verdict.VIOLATION
    # nor take effect before its call
    early = put("k", b"1", 100, None, index=1)
    assert check([early, get("k", 0, 50, b"1", 1)]).verdict is Verdict.VIOLATION


def test_unknown_cas_takes_effect_only_as_a_success() -> None:
    h = [
        put("k", b"0", 0, 10, index=1),
        cas("k", 9, b"x", 20, None, index=2),  # cannot succeed: mod revision is 1
        get("k", 100, 110, b"x", 2),
    ]
    assert check(h).verdict is Verdict.VIOLATION
    h[1] = cas("k", 1, b"x", 20, None, index=2)
    assert check(h).ok


def test_stale_reads_are_checked_at_their_revision() -> None:
    w1 = put("k", b"1", 0, 10, index=1)
    w2 = put("k", b"2", 20, 30, index=5)
    good = get("k", 40, 50, b"1", 1, revision=3, kind="stale_get")  # old but consistent
    assert check([w1, w2, good]).ok
    bad = get("k", 40, 50, b"1", 1, revision=6, kind="stale_get")  # revision 6 includes w2
    assert check([w1, w2, bad]).verdict is Verdict.VIOLATION
    ghost = get("k", 40, 50, b"zz", 1, revision=3, kind="stale_get")  # never written
    assert check([w1, w2, ghost]).verdict is Verdict.VIOLATION


def test_linearizable_read_must_cover_acknowledged_writes() -> None:
    w = put("other", b"1", 0, 10, index=7)
    r = get("k", 20, 30, None, 0, revision=6)
    res = check([w, r])
    assert res.verdict is Verdict.VIOLATION and "index 7" in res.report()


def test_range_reads_are_checked_at_their_revision() -> None:
    h = [
        put("app/a", b"1", 0, 10, index=1),
        put("app/b", b"1", 0, 10, index=2),
        delete("app/a", 20, 30, index=3),
    ]
    ok = rng_("app/", 40, 50, (("app/b", b"1", 2),), revision=3)
    assert check([*h, ok]).ok
    old = rng_("app/", 40, 50, (("app/a", b"1", 1), ("app/b", b"1", 2)), revision=2)
    assert check([*h, old]).ok
    missing = rng_("app/", 40, 50, (("app/b", b"1", 2),), revision=2)  # app/a existed at 2
    assert check([*h, missing]).verdict is Verdict.VIOLATION
    undead = rng_("app/", 40, 50, (("app/a", b"1", 1), ("app/b", b"1", 2)), revision=3)
    assert check([*h, undead]).verdict is Verdict.VIOLATION


def test_budget_exhaustion_is_undecided_not_ok() -> None:
    h = [put("k", b"%d" % i, 0, 1000, index=i + 1, client=i) for i in range(12)]
    h.append(get("k", 2000, 2010, b"nothing", 99))
    res = check(h, budget=50)
    assert res.verdict is Verdict.UNDECIDED and not res.ok
    assert "budget" in res.report()


def _by_construction(seed: int) -> list[Operation]:
    """Clients on 3 keys; each operation takes effect at a random instant inside its
    interval, in that order, against a real dict; some outcomes are then forgotten."""
    rng = random.Random(seed)
    ops: list[tuple[int, int, int, int, str, str]] = []
    for client in range(5):
        t = rng.randint(0, 20)
        for _ in range(15):
            call = t + rng.randint(0, 30)
            ret = call + rng.randint(1, 60)
            effect = rng.randint(call, ret)
            ops.append((effect, call, ret, client, rng.choice("pcgdg"), rng.choice("xyz")))
            t = ret
    state: dict[str, tuple[bytes, int]] = {}
    index = 0
    out: list[Operation] = []
    for n, (_effect, call, ret, client, kind, key) in enumerate(sorted(ops)):
        index += 1
        unknown = kind != "g" and rng.random() < 0.1
        if unknown and rng.random() < 0.5:
            out.append(put(key, b"lost%d" % n, call, None, index, client))
            continue  # never took effect
        end = None if unknown else ret
        cur = state.get(key)
        if kind == "p":
            state[key] = (b"v%d" % n, index)
            out.append(put(key, b"v%d" % n, call, end, index, client))
        elif kind == "d":
            state.pop(key, None)
            out.append(delete(key, call, end, index, client))
        elif kind == "c":
            expected = cur[1] if cur and rng.random() < 0.6 else rng.randint(0, index)
            okay = (cur[1] if cur else 0) == expected
            if okay:
                state[key] = (b"v%d" % n, index)
            current = None if okay else (cur[1] if cur else 0)
            if unknown and not okay:
                continue
            out.append(cas(key, expected, b"v%d" % n, call, end, index, okay, current, client))
        else:
            value, mod = cur if cur else (None, 0)
            out.append(get(key, call, ret, value, mod, revision=index, client=client))
    return out


@pytest.mark.parametrize("seed", range(40))
def test_histories_linearizable_by_construction_pass(seed: int) -> None:
    h = _by_construction(seed)
    res = check(h)
    assert res.ok, f"seed {seed}: {res.report()}"


@pytest.mark.parametrize("seed", range(40))
def test_corrupted_read_in_a_constructed_history_is_caught(seed: int) -> None:
    h = _by_construction(seed)
    reads = [i for i, op in enumerate(h) if op.kind == "get" and op.result and op.result[0]]
    if not reads:
        pytest.skip(f"seed {seed}: no read of a present value")
    i = random.Random(seed).choice(reads)
    op = h[i]
    h[i] = get(op.key, op.call, op.ret, b"never-written", op.result[1], op.revision, op.client)
    res = check(h)
    assert res.verdict is Verdict.VIOLATION, f"seed {seed}: {res.report()}"


def test_many_unobserved_unknown_writes_stay_cheap() -> None:
    """Thirty timed-out writes nobody saw take effect: the search leaves them out instead of
    exploring which subset happened, and still decides."""
    h = [put("k", b"base", 0, 10, index=1)]
    h += [put("k", b"lost%d" % i, 20 + i, None, index=100 + i, client=i + 2) for i in range(30)]
    h += [get("k", 500, 510, b"base", 1), put("k", b"last", 600, 610, index=200)]
    h += [get("k", 700, 710, b"last", 200)]
    res = check(h, budget=1_000)
    assert res.ok, res.report()
    # one that was seen took effect: by its sighting, and for good (nothing rewrites "last")
    h.append(get("k", 800, 810, b"lost3", 103))
    assert check(h, budget=100_000).ok
    h.append(get("k", 900, 910, b"last", 200))
    assert check(h, budget=100_000).verdict is Verdict.VIOLATION
