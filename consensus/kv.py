"""The replicated, versioned key-value state machine (DESIGN §3), applied from Raft entries.

``KvStore`` is pure: no I/O, no clock. A driver feeds it every committed Raft entry in index
order (``apply_entry``) and gets a typed result per command. The same entries give the same
state, byte for byte (``snapshot()``), on every replica and after any restore.

- **Revisions**: the store's ``revision`` is the Raft index of the entry that last changed it
  (a failed CAS, deleting an absent key, a Raft NOOP or CONFIG entry change nothing and make no
  revision). Each key keeps ``create_revision``, ``mod_revision`` and ``version``.
- **Commands** (``consensus.kv_types``): ``Put``, ``Delete``, ``Cas`` on the key's mod revision
  (expected 0 = only if absent) and ``Compact``; a ``Batch`` of puts, deletes and CAS on
  distinct keys applies them in order, all at the entry's revision, and gives ``Batched``.
  Data that does not decode (or a batch that breaks its rules) gives ``Rejected`` on every
  replica alike; an entry with empty data or of another kind only advances ``applied_index``
  (no-op safe).
- **History**: every change is kept as an ``Event`` from the compaction point ``compacted`` on;
  ``get``/``range`` read at any revision from ``compacted`` to ``revision``, and ``watch``
  returns events from ``since`` on. History older than that raises ``CompactedRevisionError``.
  ``Compact(rev)`` commands move the point forward, and so do ``retain`` (keep at most that
  many past changes) and ``retain_bytes`` (keep at most about that many bytes of values) on
  their own — functions of the entries, so replicas with the same settings agree.
- **Snapshots**: ``snapshot()`` / ``KvStore.restore(data)`` (a restored store then reflects
  ``applied_index`` and continues from the next entry). Snapshots are sealed
  (``consensus.raft_snapshot.seal``: length and SHA-256 before the payload), so whoever receives
  one in chunks can check it whole before installing it; ``restore`` checks it too and still
  reads the unsealed snapshots older data directories hold.
"""

from __future__ import annotations

import bisect
import operator
from collections.abc import Iterable, Sequence

import msgpack

from consensus.errors import DecodeError, EncodeError, LocalProtocolError
from consensus.kv_types import (
    KV_SNAPSHOT_CODEC,
    Batch,
    Batched,
    Cas,
    CasFailed,
    Compact,
    CompactedRevisionError,
    Delete,
    Event,
    EventKind,
    FutureRevisionError,
    KeyValue,
    KvCommand,
    KvResult,
    KvSnapshot,
    Ok,
    Put,
    Rejected,
    decode_batch,
    decode_command,
)
from consensus.messages import Entry, EntryKind
from consensus.raft_snapshot import is_sealed, seal, unseal

__all__ = [
    "Batch",
    "Batched",
    "Cas",
    "CasFailed",
    "Compact",
    "CompactedRevisionError",
    "Delete",
    "Event",
    "EventKind",
    "FutureRevisionError",
    "KeyValue",
    "KvCapture",
    "KvResult",
    "KvStore",
    "Ok",
    "Put",
    "Rejected",
]

SNAPSHOT_FORMAT = 1
DEFAULT_RETAIN = 10_000
"""Past changes kept for reads at a revision and watches, unless ``Compact`` drops them first."""
DEFAULT_RETAIN_BYTES = 64 * 1024 * 1024
"""Bytes of values the history keeps at most (about: the values of the changes since
``compacted``): many writes of large values must not fill a device's memory before ``retain``
changes have accumulated (64 KiB values × 12,500 changes would be 800 MB)."""
COMPACT_SLACK = 0.25
"""Automatic compaction waits until history exceeds ``retain`` by this fraction, then trims
back to ``retain`` (amortised cost; deterministic)."""


class KvStore:
    """A versioned KV state machine; see the module docstring for its contract.

    History is kept column-wise (a revision, key, new value and previous value per change,
    in four parallel lists) rather than as one ``Event`` per change: a write allocates only its
    ``KeyValue``, and ``Event`` values are built when ``watch`` or a snapshot asks for them."""

    def __init__(
        self, retain: int = DEFAULT_RETAIN, retain_bytes: int = DEFAULT_RETAIN_BYTES
    ) -> None:
        if retain < 1:
            raise LocalProtocolError("retain must keep at least one past change")
        self._retain = retain
        self._trim_above = retain * (1 + COMPACT_SLACK)  # history length that triggers a trim
        self._retain_bytes = retain_bytes
        self._trim_bytes_above = retain_bytes * (1 + COMPACT_SLACK)
        self._history_bytes = 0  # the values of the history's changes
        self._keys: dict[str, KeyValue] = {}
        # The history since ``compacted``, in revision order: change i made ``_ev_rev[i]``,
        # to key ``_ev_key[i]``, value ``_ev_kv[i]`` (None: deleted), before ``_ev_prev[i]``.
        self._ev_rev: list[int] = []
        self._ev_key: list[str] = []
        self._ev_kv: list[KeyValue | None] = []
        self._ev_prev: list[KeyValue | None] = []
        self._applied = 0
        self._revision = 0
        self._compacted = 0

    # --- read-only state ---------------------------------------------------------------------

    @property
    def applied_index(self) -> int:
        """Index of the last Raft entry applied (changing the store or not)."""
        return self._applied

    @property
    def revision(self) -> int:
        """Raft index of the last entry that changed the store (0: never changed)."""
        return self._revision

    @property
    def compacted(self) -> int:
        """Oldest revision still readable (and watchable from); 0 when nothing was dropped."""
        return self._compacted

    @property
    def retain(self) -> int:
        return self._retain

    @property
    def history_bytes(self) -> int:
        """Bytes of the values the history holds (what ``retain_bytes`` bounds)."""
        return self._history_bytes

    def __len__(self) -> int:
        return len(self._keys)

    # --- applying ----------------------------------------------------------------------------

    def apply_entry(self, entry: Entry) -> KvResult | Batched | None:
        """Apply one committed Raft entry (the next index). NOOP and CONFIG entries, and NORMAL
        entries with empty data, only advance ``applied_index`` and return ``None``."""
        if entry.kind is not EntryKind.NORMAL or not entry.data:
            self._advance(entry.index)
            return None
        return self.apply(entry.index, entry.data)

    def apply(self, index: int, data: bytes) -> KvResult | Batched:
        """Apply the command encoded in ``data``, committed at Raft ``index``.

        ``index`` must follow ``applied_index`` (``LocalProtocolError`` otherwise: the driver
        skipped or repeated an entry). Returns ``Ok``, ``CasFailed`` or ``Rejected``, or for a
        ``Batch`` their ``Batched`` list (one ``Rejected`` when the batch breaks its rules).
        """
        self._advance(index)
        try:
            cmd = decode_command(data)
            if isinstance(cmd, Batch):
                return self._execute_all(index, decode_batch(cmd))
        except DecodeError as exc:
            return Rejected(f"not a KV command: {exc.reason}", self._revision)
        return self._execute(index, cmd)

    def apply_entry_quietly(self, entry: Entry) -> int:
        """``apply_entry`` for a replica that has nobody to answer (a follower): the same
        state change, no result values built. Returns how many results ``apply_entry`` would
        have given: the commands of a valid ``Batch``, else 1 (a plain or rejected command, a
        no-op entry)."""
        index = entry.index
        self._advance(index)
        data = entry.data
        if entry.kind is not EntryKind.NORMAL or not data:
            return 1
        try:
            cmd = decode_command(data)
            if isinstance(cmd, Batch):
                cmds = decode_batch(cmd)
            else:
                self._execute(index, cmd)
                return 1
        except DecodeError:
            return 1
        self._run_batch(index, cmds, None)
        return len(cmds)

    def apply_command(self, index: int, cmd: KvCommand) -> KvResult:
        """``apply`` of a command already decoded (the proposer's own, whose entry at
        ``index`` encodes exactly ``cmd``)."""
        self._advance(index)
        return self._execute(index, cmd)

    def apply_batch(self, index: int, cmds: Sequence[KvCommand]) -> Batched:
        """``apply`` of a batch already decoded (the proposer's own): its entry at ``index``
        encodes exactly ``Batch`` of ``cmds``, which keep the batch's rules."""
        self._advance(index)
        return self._execute_all(index, cmds)

    def _execute_all(self, index: int, cmds: Sequence[KvCommand]) -> Batched:
        results: list[KvResult] = []
        self._run_batch(index, cmds, results)
        return Batched(tuple(results))

    def _run_batch(
        self, index: int, cmds: Sequence[KvCommand], results: list[KvResult] | None
    ) -> None:
        """Execute ``cmds`` (a batch's) at revision ``index``, their results appended to
        ``results`` unless it is ``None``. A ``Put`` does here what ``_put`` and ``_record``
        do, step for step (the history trimmed after the same change), without their calls."""
        keys = self._keys
        get = keys.get
        revs = self._ev_rev
        add_rev, add_key = revs.append, self._ev_key.append
        add_kv, add_prev = self._ev_kv.append, self._ev_prev.append
        trim_above, execute = self._trim_above, self._execute
        for c in cmds:
            if type(c) is not Put:
                result = execute(index, c)
                if results is not None:
                    results.append(result)
                continue
            key = c.key
            prev = get(key)
            if prev is None:
                kv = keys[key] = KeyValue(key, c.value, index, index, 1)
            else:
                kv = keys[key] = KeyValue(key, c.value, prev.create_revision, index,
                                          prev.version + 1)  # fmt: skip
            self._revision = index
            add_rev(index)
            add_key(key)
            add_kv(kv)
            add_prev(prev)
            self._history_bytes += len(c.value)
            if len(revs) > trim_above or self._history_bytes > self._trim_bytes_above:
                self._trim()
            if results is not None:
                results.append(Ok(index, prev))

    def _advance(self, index: int) -> None:
        if index != self._applied + 1:
            raise LocalProtocolError(
                f"entry {index} applied after {self._applied}: entries apply in index order"
            )
        self._applied = index

    def _execute(self, index: int, cmd: KvCommand) -> KvResult:
        if isinstance(cmd, Put):
            return Ok(index, self._put(index, cmd.key, cmd.value))
        if isinstance(cmd, Cas):
            cur = self._keys.get(cmd.key)
            current = cur.mod_revision if cur is not None else 0
            if current != cmd.expected:
                return CasFailed(cmd.key, cmd.expected, current, self._revision)
            return Ok(index, self._put(index, cmd.key, cmd.value))
        if isinstance(cmd, Delete):
            prev = self._keys.pop(cmd.key, None)
            if prev is None:
                return Ok(self._revision, None, changed=False)
            self._record(index, cmd.key, None, prev)
            return Ok(index, prev)
        if cmd.revision > self._revision:
            return Rejected(
                f"cannot compact to {cmd.revision}: the store is at {self._revision}",
                self._revision,
            )
        self._compact_to(cmd.revision)
        return Ok(self._revision, None, changed=False)

    def _put(self, index: int, key: str, value: bytes) -> KeyValue | None:
        """Set ``key`` at revision ``index``; returns its previous value."""
        keys = self._keys
        prev = keys.get(key)
        if prev is None:
            kv = keys[key] = KeyValue(key, value, index, index, 1)
        else:
            kv = keys[key] = KeyValue(key, value, prev.create_revision, index, prev.version + 1)
        self._record(index, key, kv, prev)
        return prev

    def _record(self, revision: int, key: str, kv: KeyValue | None, prev: KeyValue | None) -> None:
        self._revision = revision
        revs = self._ev_rev
        revs.append(revision)
        self._ev_key.append(key)
        self._ev_kv.append(kv)
        self._ev_prev.append(prev)
        if kv is not None:
            self._history_bytes += len(kv.value)
        if len(revs) > self._trim_above or self._history_bytes > self._trim_bytes_above:
            self._trim()

    def _trim(self) -> None:
        """Back to ``retain`` changes once the history holds more than ``retain`` plus the slack,
        and back to ``retain_bytes`` of values once it holds more than that plus the slack."""
        revs = self._ev_rev
        cut = len(revs) - self._retain if len(revs) > self._trim_above else 0
        if self._history_bytes > self._trim_bytes_above:
            excess, values = self._history_bytes - self._retain_bytes, self._ev_kv
            dropped = sum(len(kv.value) for kv in values[:cut] if kv is not None)
            while dropped < excess and cut < len(revs):
                kv = values[cut]
                dropped += 0 if kv is None else len(kv.value)
                cut += 1
            # whole revisions, up to the end of the last one touched; the newest always stays
            cut = min(bisect.bisect_right(revs, revs[cut - 1]), bisect.bisect_left(revs, revs[-1]))
        if cut > 0:
            self._compact_to(revs[cut])

    def _compact_to(self, revision: int) -> None:
        """Drop events older than ``revision``; reads at ``revision`` or later stay possible."""
        if revision <= self._compacted:
            return
        cut = bisect.bisect_left(self._ev_rev, revision)
        self._history_bytes -= sum(len(kv.value) for kv in self._ev_kv[:cut] if kv is not None)
        for column in (self._ev_rev, self._ev_key, self._ev_kv, self._ev_prev):
            del column[:cut]
        self._compacted = revision

    def _event(self, i: int) -> Event:
        """The change at history position ``i`` as an ``Event``."""
        kv = self._ev_kv[i]
        kind = EventKind.PUT if kv is not None else EventKind.DELETE
        return Event(kind, self._ev_key[i], self._ev_rev[i], kv, self._ev_prev[i])

    # --- reading -----------------------------------------------------------------------------

    def _check_revision(self, revision: int | None) -> int:
        if revision is None:
            return self._revision
        if revision > self._revision:
            raise FutureRevisionError(revision, self._revision)
        if revision < self._compacted:
            raise CompactedRevisionError(revision, self._compacted)
        return revision

    def _undone_after(self, revision: int) -> range:
        """History positions of the changes after ``revision``, newest first (undoing them
        gives the state at it)."""
        cut = bisect.bisect_right(self._ev_rev, revision)
        return range(len(self._ev_rev) - 1, cut - 1, -1)

    def get(self, key: str, revision: int | None = None) -> KeyValue | None:
        """``key``'s value at ``revision`` (default: now); ``None`` if absent then.

        Raises ``CompactedRevisionError`` below ``compacted``, ``FutureRevisionError`` above
        ``revision``."""
        rev = self._check_revision(revision)
        kv = self._keys.get(key)
        keys, prevs = self._ev_key, self._ev_prev
        for i in self._undone_after(rev):
            if keys[i] == key:
                kv = prevs[i]
        return kv

    def range(
        self, prefix: str = "", revision: int | None = None, limit: int | None = None
    ) -> list[KeyValue]:
        """Every key starting with ``prefix`` at ``revision`` (default: now), sorted by key,
        at most ``limit`` of them. Same errors as ``get``."""
        rev = self._check_revision(revision)
        view = {k: kv for k, kv in self._keys.items() if k.startswith(prefix)}
        keys, prevs = self._ev_key, self._ev_prev
        for i in self._undone_after(rev):
            key = keys[i]
            if key.startswith(prefix):
                prev = prevs[i]
                if prev is None:
                    view.pop(key, None)
                else:
                    view[key] = prev
        out = [view[k] for k in sorted(view)]
        return out if limit is None else out[:limit]

    def watch(
        self,
        prefix: str = "",
        since: int = 0,
        *,
        exact: bool = False,
        limit: int | None = None,
        limit_bytes: int | None = None,
    ) -> list[Event]:
        """Changes to keys starting with ``prefix`` (equal to it when ``exact``) made at
        revision ``since`` or later, in revision order. A watcher resumes with
        ``since = last event's revision + 1``.

        ``limit`` / ``limit_bytes``: once the events reach that many, or that many bytes of
        keys and values (new and previous), the answer ends with the last event's revision:
        never inside a revision, so resuming as above misses nothing. None: no limit.

        Raises ``CompactedRevisionError`` when ``since`` is older than ``compacted`` (some of
        those changes are forgotten: the watcher must re-read with ``range`` and watch from
        the revision it read at + 1)."""
        if since < self._compacted:
            raise CompactedRevisionError(since, self._compacted)
        start = bisect.bisect_left(self._ev_rev, since)
        keys, event = self._ev_key, self._event
        if limit is None and limit_bytes is None:
            if exact:
                return [event(i) for i in range(start, len(keys)) if keys[i] == prefix]
            return [event(i) for i in range(start, len(keys)) if keys[i].startswith(prefix)]
        most = len(keys) if limit is None else limit
        most_bytes = float("inf") if limit_bytes is None else limit_bytes
        revs, out, size = self._ev_rev, [], 0
        for i in range(start, len(keys)):
            if out and (len(out) >= most or size >= most_bytes) and revs[i] != out[-1].revision:
                break
            key = keys[i]
            if key == prefix if exact else key.startswith(prefix):
                e = event(i)
                out.append(e)
                size += event_size(e)
        return out

    def changed_keys(self, since: int) -> list[str]:
        """The keys of the changes made at revision ``since`` or later, in revision order (one
        per change: ``[e.key for e in watch("", since)]`` without building the events). Same
        error as ``watch``."""
        if since < self._compacted:
            raise CompactedRevisionError(since, self._compacted)
        return self._ev_key[bisect.bisect_left(self._ev_rev, since) :]

    def items(self) -> Iterable[KeyValue]:
        """Current key-values, sorted by key."""
        return [self._keys[k] for k in sorted(self._keys)]

    # --- snapshots ---------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """The whole state as deterministic, sealed bytes (same applied entries → same bytes)."""
        return self.capture().encode()

    def capture(self) -> KvCapture:
        """The state as of now, held without copying the values (they are immutable): its
        ``encode()`` gives what ``snapshot()`` gives now, whatever is applied meanwhile, and may
        run on another thread (a driver encodes a large store off its event loop)."""
        return KvCapture(
            self._applied,
            self._revision,
            self._compacted,
            self._retain,
            list(self._keys.values()),
            (self._ev_rev[:], self._ev_key[:], self._ev_kv[:], self._ev_prev[:]),
        )

    @classmethod
    def restore(cls, data: bytes, retain_bytes: int = DEFAULT_RETAIN_BYTES) -> KvStore:
        """A store equal to the one ``data`` was taken from (``retain_bytes`` is a local
        setting, not in the snapshot: give the one the store had). Raises ``DecodeError`` on bytes
        that are not a KV snapshot of a known format (``SnapshotCorruptError``, a
        ``DecodeError``, when sealed data is cut short or fails its SHA-256 check)."""
        payload = unseal(data) if is_sealed(data) else data  # a view: no extra copy
        snap = KV_SNAPSHOT_CODEC.decode(payload)
        if not isinstance(snap, KvSnapshot) or snap.format != SNAPSHOT_FORMAT:
            raise DecodeError("not a KV snapshot of a known format")
        store = cls(retain=max(1, snap.retain), retain_bytes=retain_bytes)
        store._applied = snap.applied_index
        store._revision = snap.revision
        store._compacted = snap.compacted
        store._keys = {kv.key: kv for kv in snap.keys}
        events = snap.events
        for e in events:  # what every replica records; the history keeps no kind of its own
            deleted = e.kind == EventKind.DELETE
            if (e.kv is None) != deleted or (deleted and e.prev is None):
                raise DecodeError(
                    f"KV snapshot event at revision {e.revision} is a {e.kind.name} with "
                    f"{'no' if e.kv is None else 'a'} value and {'no' if e.prev is None else 'a'}"
                    " previous value"
                )
        store._ev_rev = [e.revision for e in events]
        store._ev_key = [e.key for e in events]
        store._ev_kv = [e.kv for e in events]
        store._ev_prev = [e.prev for e in events]
        store._history_bytes = sum(len(e.kv.value) for e in events if e.kv is not None)
        return store


History = tuple[list[int], list[str], list["KeyValue | None"], list["KeyValue | None"]]
"""A ``KvStore``'s history columns: revisions, keys, new values, previous values."""


class KvCapture:
    """A ``KvStore``'s state at one applied index (``KvStore.capture``), to encode later."""

    __slots__ = ("applied_index", "compacted", "history", "keys", "retain", "revision")

    def __init__(
        self,
        applied_index: int,
        revision: int,
        compacted: int,
        retain: int,
        keys: list[KeyValue],
        history: History,
    ) -> None:
        self.applied_index = applied_index
        self.revision = revision
        self.compacted = compacted
        self.retain = retain
        self.keys = keys
        self.history = history

    @property
    def events(self) -> tuple[Event, ...]:
        """The captured history as ``Event`` values, in revision order."""
        return tuple(
            Event(EventKind.PUT if kv is not None else EventKind.DELETE, key, rev, kv, prev)
            for rev, key, kv, prev in zip(*self.history, strict=True)
        )

    def encode(self) -> bytes:
        """The sealed snapshot bytes (``KvStore.snapshot`` of the store when captured): the
        bytes ``KV_SNAPSHOT_CODEC`` gives for the ``KvSnapshot``, packed straight from the
        values (they were checked when their commands decoded, so the codec's schema pass is
        skipped; a test holds the two encodings equal)."""
        kvl = _kv_list
        put, delete = int(EventKind.PUT), int(EventKind.DELETE)
        keys = [kvl(kv) for kv in sorted(self.keys, key=_key_of)]
        events = [
            [delete, key, rev, None, kvl(prev)] if kv is None  # type: ignore[arg-type]
            else [put, key, rev, kvl(kv), None if prev is None else kvl(prev)]
            for rev, key, kv, prev in zip(*self.history, strict=True)
        ]  # fmt: skip
        body = [SNAPSHOT_FORMAT, self.applied_index, self.revision, self.compacted, self.retain,
                keys, events]  # fmt: skip
        frame = _SNAPSHOT_TYPE + msgpack.packb(body, use_bin_type=True)
        if len(frame) > KV_SNAPSHOT_CODEC.max_size:
            raise EncodeError(f"kv-snapshot: {len(frame)} bytes > {KV_SNAPSHOT_CODEC.max_size}")
        return seal(frame)

    def snapshot(self) -> KvSnapshot:
        """The captured state as the ``KvSnapshot`` value (what ``encode`` encodes)."""
        return KvSnapshot(
            SNAPSHOT_FORMAT,
            self.applied_index,
            self.revision,
            self.compacted,
            self.retain,
            tuple(sorted(self.keys, key=_key_of)),
            self.events,
        )


_SNAPSHOT_TYPE = bytes((KV_SNAPSHOT_CODEC.type_id(KvSnapshot),))


_kv_list = operator.attrgetter("key", "value", "create_revision", "mod_revision", "version")
"""A ``KeyValue``'s fields in order, as a tuple (msgpack packs it as the codec's array)."""


def _key_of(kv: KeyValue) -> str:
    return kv.key


def event_size(e: Event) -> int:
    """The bytes of an event's key and values (new and previous): what ``limit_bytes`` of
    ``KvStore.watch`` counts."""
    return len(e.key) + (len(e.kv.value) if e.kv else 0) + (len(e.prev.value) if e.prev else 0)
