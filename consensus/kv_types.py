"""The replicated KV's value types: commands, key-values, watch events, results and errors.

Commands travel inside Raft entries, encoded with ``KV_CODEC`` (one type byte, then a msgpack
body; see ``consensus.codec``). ``KvCommandType`` numbers are the format of the replicated log:
APPEND-ONLY — never renumber, never reuse a retired number, add fields only at the end.

Revisions (DESIGN §3): the store's revision is the Raft index of the entry that last changed
it; a key's ``create_revision`` / ``mod_revision`` are the indices of the entries that created
and last modified it, ``version`` counts its writes since it was (re)created. Revision 0 means
"never": a CAS expecting mod revision 0 succeeds only if the key is absent.

A ``Batch`` carries several commands in one entry (a leader groups the proposals that arrive
together, so per-entry costs are paid once per group). Its commands touch distinct keys, so
they share the entry's revision and a key's mod revision still names exactly one value.
"""

from __future__ import annotations

import enum
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import msgpack

from consensus.codec import U32, U64, Codec
from consensus.errors import ConsensusError, DecodeError
from consensus.fastinit import fast_init

MAX_COMMAND_BYTES = 1024 * 1024
"""Hard limit on one encoded command (a Raft entry's data)."""
MAX_SNAPSHOT_BYTES = 2**31 - 1
"""Hard limit on one encoded KV snapshot."""

KV_CODEC: Codec[object] = Codec("kv", max_size=MAX_COMMAND_BYTES)
"""Codec of the commands carried by Raft entries."""
KV_SNAPSHOT_CODEC: Codec[object] = Codec("kv-snapshot", max_size=MAX_SNAPSHOT_BYTES)
"""Codec of the store's snapshot (``KvSnapshot``)."""


class KvCommandType(enum.IntEnum):
    """Type byte of a KV command. APPEND-ONLY (persisted in the replicated log)."""

    PUT = 1
    DELETE = 2
    CAS = 3
    COMPACT = 4
    BATCH = 5


class EventKind(enum.IntEnum):
    """What a watch event reports. APPEND-ONLY (persisted in snapshots)."""

    PUT = 1
    DELETE = 2


@KV_CODEC.register(KvCommandType.PUT)
@fast_init
@dataclass(frozen=True, slots=True)
class Put:
    """Set ``key`` to ``value`` (creating it if absent)."""

    key: str
    value: bytes


@KV_CODEC.register(KvCommandType.DELETE)
@fast_init
@dataclass(frozen=True, slots=True)
class Delete:
    """Remove ``key``; deleting an absent key changes nothing (no new revision)."""

    key: str


@KV_CODEC.register(KvCommandType.CAS)
@fast_init
@dataclass(frozen=True, slots=True)
class Cas:
    """Set ``key`` to ``value`` only if its mod revision is ``expected`` (0: only if absent)."""

    key: str
    expected: U64
    value: bytes


@KV_CODEC.register(KvCommandType.COMPACT)
@dataclass(frozen=True, slots=True)
class Compact:
    """Forget history before ``revision``: reads at an older revision and watches from an
    older revision fail with ``CompactedRevisionError`` afterwards."""

    revision: U64


MAX_BATCH_COMMANDS = 1024
"""Most commands one ``Batch`` may carry."""


@KV_CODEC.register(KvCommandType.BATCH)
@dataclass(frozen=True, slots=True)
class Batch:
    """Several ``Put``/``Delete``/``Cas`` commands on distinct keys, applied in order as one
    entry: each is ``encode_command``'s bytes of one command. A batch that breaks these rules
    (another kind of command inside, a key twice, more than ``MAX_BATCH_COMMANDS``, none) is
    rejected whole by every replica alike."""

    commands: tuple[bytes, ...]


KvCommand = Put | Delete | Cas | Compact
KV_CODEC.check_schemas()

_PUT_TYPE = bytes((KvCommandType.PUT,))
_BATCH_TYPE = bytes((KvCommandType.BATCH,))
_GIL = getattr(sys, "_is_gil_enabled", lambda: True)()  # False only on a free-threaded build
if msgpack.Packer.__module__ == "msgpack._cmsgpack" and _GIL:
    # One packer for every Put: ``msgpack.packb`` builds a new one per call (3x the cost of
    # packing a put). Shared safely across threads: the C packer runs a call through without
    # releasing the GIL, as it packs only a str and a bytes here (no Python code runs). A
    # free-threaded build (no GIL) takes the packer per call below.
    _packb_bin = msgpack.Packer(use_bin_type=True, autoreset=True).pack
else:  # the pure-Python fallback is not atomic, nor is anything without a GIL: one per call
    _packb_bin = partial(msgpack.packb, use_bin_type=True)
_unpackb = msgpack.unpackb
_new = object.__new__
_set_put_key = Put.__dict__["key"].__set__  # the slots' own stores (Put is frozen)
_set_put_value = Put.__dict__["value"].__set__
_set_batch_commands = Batch.__dict__["commands"].__set__


def encode_command(cmd: KvCommand | Batch) -> bytes:
    """The bytes to propose to Raft for ``cmd`` (raises ``EncodeError`` if it does not fit).

    A ``Put`` of a ``str`` key and a ``bytes`` value (every write's command) is packed here
    directly: the bytes ``KV_CODEC`` gives (a test holds them equal), without its generic
    dispatch; anything else goes through the codec."""
    if type(cmd) is Put:
        key, value = cmd.key, cmd.value
        if type(key) is str and type(value) is bytes:
            frame = _PUT_TYPE + _packb_bin([key, value])
            if len(frame) <= MAX_COMMAND_BYTES:
                return frame
    return KV_CODEC.encode(cmd)


def encode_batch(datas: Sequence[bytes]) -> bytes:
    """``encode_command(Batch(tuple(datas)))``: the same bytes (a test holds them equal),
    packed directly when every item is ``bytes``; raises ``EncodeError`` if it does not fit."""
    if all(type(d) is bytes for d in datas):
        frame = _BATCH_TYPE + _packb_bin([datas if type(datas) is list else list(datas)])
        if len(frame) <= MAX_COMMAND_BYTES:
            return frame
    return KV_CODEC.encode(Batch(tuple(datas)))


def decode_command(data: bytes) -> KvCommand | Batch:
    """Inverse of ``encode_command``; raises only ``DecodeError``. A well-formed ``Put`` or
    ``Batch`` frame is unpacked directly (``_decode_put``, ``_decode_batch``); anything else,
    or anything they do not take, goes through the codec, which decodes it or says why not."""
    if type(data) is bytes:
        head = data[:1]
        if head == _PUT_TYPE:
            put = _decode_put(data)
            if put is not None:
                return put
        elif head == _BATCH_TYPE:
            batch = _decode_batch(data)
            if batch is not None:
                return batch
    return KV_CODEC.decode(data)  # type: ignore[return-value]


def _decode_batch(data: bytes) -> Batch | None:
    """``data`` decoded when it is a well-formed ``Batch`` frame (one field: an array of
    ``bytes``, the codec's checks), else ``None`` (as ``_decode_put``)."""
    if len(data) > MAX_COMMAND_BYTES:
        return None
    try:
        body = _unpackb(data[1:], raw=False, use_list=False, strict_map_key=False, timestamp=0)
    except Exception:  # malformed: the codec raises the DecodeError
        return None
    if type(body) is not tuple or len(body) != 1:
        return None
    (commands,) = body
    if type(commands) is not tuple or not all(type(c) is bytes for c in commands):
        return None
    batch = _new(Batch)
    _set_batch_commands(batch, commands)
    return batch


def _decode_put(data: bytes) -> Put | None:
    """``data`` decoded when it is a well-formed ``Put`` frame (what ``decode_command`` would
    give for it), else ``None``: the caller then asks ``decode_command``, which decodes it or
    says why not. Checks what the codec checks (type byte, exactly two fields, a ``str`` key
    and a ``bytes`` value, the size limit) without its generic dispatch."""
    if data[:1] != _PUT_TYPE or len(data) > MAX_COMMAND_BYTES:
        return None
    try:
        body = _unpackb(data[1:], raw=False, use_list=False, strict_map_key=False, timestamp=0)
    except Exception:  # malformed: decode_command raises the DecodeError
        return None
    if type(body) is not tuple or len(body) != 2:
        return None
    key, value = body
    if type(key) is not str or type(value) is not bytes:
        return None
    put = _new(Put)
    _set_put_key(put, key)
    _set_put_value(put, value)
    return put


def batch_key(cmd: KvCommand) -> str | None:
    """The key ``cmd`` changes when it may join a ``Batch`` (``None``: it may not)."""
    return None if isinstance(cmd, Compact) else cmd.key


def decode_batch(batch: Batch) -> list[KvCommand]:
    """The commands of ``batch``, checked against its rules (``DecodeError`` if broken)."""
    n = len(batch.commands)
    if not 0 < n <= MAX_BATCH_COMMANDS:
        raise DecodeError(f"a batch holds 1 to {MAX_BATCH_COMMANDS} commands, not {n}")
    cmds: list[KvCommand] = []
    keys: set[str] = set()
    for data in batch.commands:
        cmd = _decode_put(data) or decode_command(data)
        t = type(cmd)
        if t is not Put and t is not Delete and t is not Cas:
            raise DecodeError(f"a batch holds only puts, deletes and CAS, not {t.__name__}")
        key = cmd.key  # type: ignore[union-attr]
        if key in keys:
            raise DecodeError(f"a batch changes each key once; {key!r} is there twice")
        keys.add(key)
        cmds.append(cmd)  # type: ignore[arg-type]
    return cmds


@fast_init
@dataclass(frozen=True, slots=True)
class KeyValue:
    """One key's value and its revisions at some revision of the store."""

    key: str
    value: bytes
    create_revision: U64
    mod_revision: U64
    version: U64


@fast_init
@dataclass(frozen=True, slots=True)
class Event:
    """A change made at ``revision``: ``kv`` is the key's new value (``None`` when deleted)
    and ``prev`` its value just before (``None`` when it was created)."""

    kind: EventKind
    key: str
    revision: U64
    kv: KeyValue | None
    prev: KeyValue | None


@KV_SNAPSHOT_CODEC.register(1)
@dataclass(frozen=True, slots=True)
class KvSnapshot:
    """The serialised store: every field is a function of the applied entries alone."""

    format: U32
    applied_index: U64
    revision: U64
    compacted: U64
    retain: U64
    keys: tuple[KeyValue, ...]
    """Current values, sorted by key."""
    events: tuple[Event, ...]
    """History kept since ``compacted``, in revision order."""


KV_SNAPSHOT_CODEC.check_schemas()


# --- results -----------------------------------------------------------------------------------


@fast_init
@dataclass(frozen=True, slots=True)
class Ok:
    """The command was applied. ``revision`` is the store's revision after it (the entry's index
    when it changed the store); ``prev`` the key's value before (``None``: absent or n/a)."""

    revision: int
    prev: KeyValue | None = None
    changed: bool = True


@fast_init
@dataclass(frozen=True, slots=True)
class CasFailed:
    """A compare-and-set did not match: the key's mod revision is ``current`` (0: absent); the
    store is unchanged at ``revision``."""

    key: str
    expected: int
    current: int
    revision: int


@fast_init
@dataclass(frozen=True, slots=True)
class Rejected:
    """The entry's data is not a valid command (or asks the impossible, such as compacting a
    future revision). Every replica rejects it the same way; the store is unchanged."""

    reason: str
    revision: int


KvResult = Ok | CasFailed | Rejected


@dataclass(frozen=True, slots=True)
class Batched:
    """The results of a ``Batch``'s commands, in its order."""

    results: tuple[KvResult, ...]


# --- errors ------------------------------------------------------------------------------------


class KvError(ConsensusError):
    """Base class of the KV store's errors."""


class CompactedRevisionError(KvError):
    """A read or watch asked for a revision older than the compaction point (HTTP 410)."""

    def __init__(self, requested: int, compacted: int) -> None:
        super().__init__(f"revision {requested} has been compacted (oldest available: {compacted})")
        self.requested = requested
        self.compacted = compacted


class FutureRevisionError(KvError):
    """A read asked for a revision the store has not reached yet."""

    def __init__(self, requested: int, current: int) -> None:
        super().__init__(f"revision {requested} is ahead of the store (at {current})")
        self.requested = requested
        self.current = current
