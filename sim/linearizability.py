"""A linearizability checker for KV histories (Wing & Gong's search with Lowe's memoisation).

A history is a list of ``Operation``s, each with its call and return times (virtual µs) and
outcome. ``check(history, budget)`` decides whether some total order of the operations, each
taking effect at one instant between its call and its return, explains every outcome under the
KV's sequential specification (``consensus.kv``):

- **Single-key operations** (``put``, ``delete``, ``cas``, linearizable ``get``) are searched
  per key: the KV is a map of independent registers, so a history is linearizable iff its
  per-key sub-histories are (P-compositionality, Herlihy & Wing). The search is the WGL
  algorithm as refined by Lowe (and used by porcupine): a linked list of call/return events,
  linearize a pending call when the model allows it, backtrack at a return whose call was not
  linearized, memoise (bitset of linearized operations, model state) pairs already explored.
- **Outcome unknown** (``ret is None``: timed out, node crashed): the operation may take effect
  at any point after its call, or never. An unknown read constrains nothing and is dropped; an
  unknown CAS can only take effect as a success; an unknown write that nothing observed (its
  value and mod revision never seen) is left out of the search, which changes no verdict.
- **Reads at a revision** (stale ``get`` from a follower's local copy, prefix ``range``) are
  checked against the state at their revision as the writes' Raft indices determine it: the
  value read must be the one written at its mod revision, and no write known to have taken
  effect may lie between that mod revision and the read's revision. Linearizable reads that
  report a revision are checked the same way, and additionally their revision must cover every
  write acknowledged before they were called.

The model state of a key is ``(value, mod_revision)``: ``value`` ``None`` = absent (mod 0). A
write records the Raft index it was proposed at (``index``) as the mod revision it creates when
it takes effect; ``None`` there means "unknown", and reads then accept whatever mod revision
they saw (the check becomes value-only for that write).

``budget`` caps the states explored (summed over keys); a search that runs out gives
``Verdict.UNDECIDED``, which callers must treat as a failure (size histories so it decides).
"""

from __future__ import annotations

import enum
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

INFINITY = float("inf")
DEFAULT_BUDGET = 2_000_000

OpKind = str
"""One of ``put``, ``delete``, ``cas``, ``get`` (linearizable), ``stale_get``, ``range``."""

WRITES = ("put", "delete", "cas")


@dataclass(frozen=True, slots=True)
class Operation:
    """One client operation and its outcome.

    Inputs: ``key`` (the prefix for ``range``), ``value`` written (``put``/``cas``),
    ``expected`` mod revision (``cas``; 0 = absent), ``index``: the Raft index a write was
    proposed at, i.e. the mod revision it creates if it takes effect (``None``: unknown).
    Outputs (meaningful when ``ret`` is not ``None``): ``ok`` (``cas`` succeeded),
    ``current`` (a failed ``cas``: the key's mod revision then, ``None`` if not reported),
    ``result`` (``get``/``stale_get``: ``(value, mod_revision)``, ``(None, 0)`` when absent;
    ``range``: the ``(key, value, mod_revision)`` triples read), ``revision`` (reads: the
    store's applied index they read at, ``None`` if not reported).
    """

    id: int
    client: int
    kind: OpKind
    key: str
    call: int
    ret: int | None
    value: bytes | None = None
    expected: int = 0
    index: int | None = None
    ok: bool | None = None
    current: int | None = None
    result: tuple[bytes | None, int] | None = None
    items: tuple[tuple[str, bytes, int], ...] = ()
    revision: int | None = None

    def describe(self) -> str:
        """A one-line description for failure reports."""
        ret = "?" if self.ret is None else str(self.ret)
        parts = [f"#{self.id} c{self.client} {self.kind}({self.key!r}"]
        if self.kind == "cas":
            parts.append(f", expect {self.expected}")
        if self.value is not None:
            parts.append(f", {self.value!r}")
        parts.append(f") [{self.call}..{ret}]")
        if self.index is not None:
            parts.append(f" @{self.index}")
        if self.ret is not None:
            if self.kind == "cas":
                parts.append(f" -> {'ok' if self.ok else f'failed (current {self.current})'}")
            elif self.kind in ("get", "stale_get"):
                parts.append(f" -> {self.result}")
            elif self.kind == "range":
                parts.append(f" -> {list(self.items)}")
            if self.revision is not None:
                parts.append(f" at rev {self.revision}")
        return "".join(parts)


class Verdict(enum.Enum):
    OK = "linearizable"
    VIOLATION = "not linearizable"
    UNDECIDED = "could not decide (budget exhausted)"


@dataclass(slots=True)
class CheckResult:
    """The checker's answer. ``problems`` explain a violation or where the budget ran out."""

    verdict: Verdict
    operations: int
    keys: int
    explored: int
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.verdict is Verdict.OK

    def report(self) -> str:
        head = (
            f"{self.verdict.value}: {self.operations} operations on {self.keys} keys, "
            f"{self.explored} states explored"
        )
        return "\n  ".join([head, *self.problems[:10]])


# --- the sequential model of one key ------------------------------------------------------------

State = tuple[bytes | None, int | None]
"""(value or None if absent, mod revision or None if unknown)."""
INITIAL: State = (None, 0)


def _step(state: State, op: Operation) -> State | None:
    """The state after ``op`` takes effect in ``state``; ``None`` if its outcome is impossible."""
    value, mod = state
    kind = op.kind
    if kind == "put":
        return (op.value, op.index)
    if kind == "delete":
        return (None, 0)
    if kind == "cas":
        if op.ret is None or op.ok:
            if mod is not None and mod != op.expected:
                return None
            if mod is None and (value is None) != (op.expected == 0):
                return None
            return (op.value, op.index)
        if mod is not None:
            if mod == op.expected:
                return None
            if op.current is not None and op.current != mod:
                return None
            return state
        if op.current is not None:
            return (value, op.current) if (value is None) == (op.current == 0) else None
        return state
    # linearizable get
    assert op.result is not None
    got_value, got_mod = op.result
    if got_value != value:
        return None
    if mod is None:
        return (value, got_mod)
    return state if got_mod == mod else None


# --- the search -----------------------------------------------------------------------------------


@dataclass(slots=True)
class _KeyOutcome:
    ok: bool | None
    explored: int
    problem: str | None


def _check_key(key: str, ops: Sequence[Operation], budget: int) -> _KeyOutcome:
    """WGL/Lowe search over one key's operations (see the module docstring)."""
    n = len(ops)
    # Events: (time, 0 = call / 1 = return, op position). Calls sort before returns at the same
    # instant, which makes touching operations concurrent (the permissive reading).
    events = []
    for i, op in enumerate(ops):
        events.append((op.call, 0, i))
        events.append((INFINITY if op.ret is None else op.ret, 1, i))
    events.sort()
    m = len(events)
    # A doubly linked list over event slots 1..m with sentinels 0 (head) and m + 1 (tail).
    nxt = [*range(1, m + 2), m + 1]
    prv = [0, *range(0, m + 1)]
    is_call = [False] * (m + 2)
    op_of = [-1] * (m + 2)
    ret_slot = [0] * n
    unknown_ret = [False] * (m + 2)
    for s, (t, kind, i) in enumerate(events, start=1):
        op_of[s] = i
        if kind == 0:
            is_call[s] = True
        else:
            ret_slot[i] = s
            unknown_ret[s] = t == INFINITY
    call_slot = [0] * n
    for s in range(1, m + 1):
        if is_call[s]:
            call_slot[op_of[s]] = s
    tail = m + 1

    def unlink(s: int) -> None:
        nxt[prv[s]] = nxt[s]
        prv[nxt[s]] = prv[s]

    def relink(s: int) -> None:
        nxt[prv[s]] = s
        prv[nxt[s]] = s

    state: State = INITIAL
    linearized = 0
    cache: set[tuple[int, State]] = set()
    stack: list[tuple[int, State]] = []
    explored = 0
    deepest = -1
    stuck_at = -1
    entry = nxt[0]
    while True:
        if entry == tail or unknown_ret[entry]:
            return _KeyOutcome(True, explored, None)  # every known operation is linearized
        if is_call[entry]:
            i = op_of[entry]
            new = _step(state, ops[i])
            if new is not None:
                lin = linearized | (1 << i)
                memo = (lin, new)
                if memo not in cache:
                    explored += 1
                    if explored > budget:
                        return _KeyOutcome(
                            None,
                            explored,
                            f"key {key!r}: budget of {budget} states exhausted "
                            f"({n} operations, {len(stack)} linearized so far)",
                        )
                    cache.add(memo)
                    stack.append((i, state))
                    state, linearized = new, lin
                    unlink(entry)
                    unlink(ret_slot[i])
                    entry = nxt[0]
                    continue
            entry = nxt[entry]
            continue
        # a return whose call is not linearized: backtrack
        if len(stack) > deepest:
            deepest, stuck_at = len(stack), op_of[entry]
        if not stack:
            return _KeyOutcome(False, explored, _violation(key, ops, stuck_at, deepest))
        i, state = stack.pop()
        linearized &= ~(1 << i)
        relink(ret_slot[i])
        relink(call_slot[i])
        entry = nxt[call_slot[i]]


def _violation(key: str, ops: Sequence[Operation], stuck: int, depth: int) -> str:
    op = ops[stuck]
    window = [o for o in ops if o.call <= (op.ret or op.call) and (o.ret or INFINITY) >= op.call]
    lines = [
        f"key {key!r}: no linearization of its {len(ops)} operations; at best {depth} "
        f"linearized before {op.describe()} could not be explained; concurrent or touching:",
        *(f"    {o.describe()}" for o in window[:12]),
    ]
    return "\n".join(lines)


# --- reads at a revision --------------------------------------------------------------------------


@dataclass(slots=True)
class _KeyWrites:
    """The writes on one key with a known index: definite (acknowledged) and possible."""

    definite: list[Operation] = field(default_factory=list)
    possible: list[Operation] = field(default_factory=list)

    def changes(self) -> Iterable[Operation]:
        return [*self.definite, *self.possible]


def _writes_by_key(history: Sequence[Operation]) -> dict[str, _KeyWrites]:
    out: dict[str, _KeyWrites] = defaultdict(_KeyWrites)
    for op in history:
        if op.kind not in WRITES or op.index is None:
            continue
        if op.ret is None:
            out[op.key].possible.append(op)
        elif op.kind != "cas" or op.ok:
            out[op.key].definite.append(op)
    return out


def _check_at_revision(
    key: str, value: bytes | None, mod: int, rev: int, writes: _KeyWrites, read: Operation
) -> str | None:
    """Why reading ``(value, mod)`` of ``key`` at revision ``rev`` is impossible, or None."""
    if value is not None:
        if mod > rev or mod == 0:
            return f"{read.describe()}: mod revision {mod} of {key!r} is not in (0, {rev}]"
        source = [
            w
            for w in writes.changes()
            if w.index == mod and w.kind != "delete" and w.value == value
        ]
        if not source:
            return f"{read.describe()}: no write of {value!r} to {key!r} at revision {mod}"
        later = [w for w in writes.definite if w.index is not None and mod < w.index <= rev]
        if later:
            return (
                f"{read.describe()}: {key!r} read as of {mod} at revision {rev}, but "
                f"{later[0].describe()} changed it in between"
            )
        return None
    sets = [w for w in writes.definite if w.kind != "delete" and w.index is not None]
    last = max((w.index for w in sets if w.index is not None and w.index <= rev), default=0)
    if last == 0:
        return None
    deletes = [
        w
        for w in writes.changes()
        if w.kind == "delete" and w.index is not None and last < w.index <= rev
    ]
    if not deletes:
        return f"{read.describe()}: {key!r} read absent at revision {rev}, but it was set at {last}"
    return None


def _revision_problems(history: Sequence[Operation]) -> list[str]:
    writes = _writes_by_key(history)
    empty = _KeyWrites()
    acked = sorted(
        (op.ret, op.index)
        for op in history
        if op.kind in WRITES and op.ret is not None and op.index is not None
        if op.kind != "cas" or op.ok
    )
    problems: list[str] = []
    for op in history:
        if op.ret is None or op.revision is None or op.kind in WRITES:
            continue
        rev = op.revision
        if op.kind == "get":
            floor = max((i for r, i in acked if r < op.call), default=0)
            if rev < floor:
                problems.append(
                    f"{op.describe()}: linearizable read at revision {rev} misses a write "
                    f"acknowledged at index {floor} before it was called"
                )
        if op.kind in ("get", "stale_get"):
            assert op.result is not None
            why = _check_at_revision(
                op.key, op.result[0], op.result[1], rev, writes.get(op.key, empty), op
            )
            if why:
                problems.append(why)
        elif op.kind == "range":
            seen = {k for k, _, _ in op.items}
            for k, v, mod in op.items:
                if not k.startswith(op.key):
                    problems.append(f"{op.describe()}: {k!r} is outside the prefix")
                why = _check_at_revision(k, v, mod, rev, writes.get(k, empty), op)
                if why:
                    problems.append(why)
            for k in sorted(writes):
                if k.startswith(op.key) and k not in seen:
                    why = _check_at_revision(k, None, 0, rev, writes[k], op)
                    if why:
                        problems.append(why)
    return problems


# --- pruning -------------------------------------------------------------------------------------


def _prune_unobserved(history: Sequence[Operation]) -> set[int]:
    """Positions in ``history`` of the unknown-outcome ``put``/``cas`` operations that no
    outcome could have observed: their value was never read, and their index (the mod revision
    they would create) was never read, expected by a CAS or reported by a failed one. "It never
    took effect" is always a possible reading of such a write, and no outcome needs it to have
    taken effect, so leaving it out keeps the verdict and spares the search the 2^k subsets of
    such writes. Only writes with a known index, and only on keys whose failed CAS all report
    their current mod revision."""
    values: dict[str, set[bytes | None]] = defaultdict(set)
    revs: dict[str, set[int]] = defaultdict(set)
    blind: set[str] = set()
    for op in history:
        if op.kind in ("get", "stale_get") and op.ret is not None and op.result is not None:
            values[op.key].add(op.result[0])
            revs[op.key].add(op.result[1])
        elif op.kind == "range" and op.ret is not None:
            for k, v, m in op.items:
                values[k].add(v)
                revs[k].add(m)
        elif op.kind == "cas":
            revs[op.key].add(op.expected)
            if op.ret is not None and not op.ok:
                if op.current is None:
                    blind.add(op.key)
                else:
                    revs[op.key].add(op.current)
    return {
        pos
        for pos, op in enumerate(history)
        if op.ret is None
        and op.kind in ("put", "cas")
        and op.index is not None
        and op.key not in blind
        and op.value not in values[op.key]
        and op.index not in revs[op.key]
    }


# --- entry point ----------------------------------------------------------------------------------


def check(history: Sequence[Operation], budget: int = DEFAULT_BUDGET) -> CheckResult:
    """Check ``history``; see the module docstring. Never raises on a bad history."""
    per_key: dict[str, list[Operation]] = defaultdict(list)
    pruned = _prune_unobserved(history)
    for pos, op in enumerate(history):
        if pos in pruned:
            continue
        if op.kind in WRITES or (op.kind == "get" and op.ret is not None):
            per_key[op.key].append(op)
    problems = _revision_problems(history)
    explored = 0
    undecided: list[str] = []
    for key in sorted(per_key):
        out = _check_key(key, per_key[key], max(1, budget - explored))
        explored += out.explored
        if out.ok is False and out.problem:
            problems.append(out.problem)
        elif out.ok is None and out.problem:
            undecided.append(out.problem)
    if problems:
        verdict = Verdict.VIOLATION
    elif undecided:
        verdict = Verdict.UNDECIDED
    else:
        verdict = Verdict.OK
    keys = len({op.key for op in history})
    return CheckResult(verdict, len(history), keys, explored, problems + undecided)
