"""Messages of the mesh's RAFT and KV channels (one-way envelopes; replies travel back the same
way, matched by ``id``). The RAFT channel body is a ``RaftBatch``: several encoded Raft
messages for one peer, sent together.

``KvRequest`` kinds: PROPOSE (a KV command, to the leader), READ (a get or prefix range served
by a group member, linearizable or stale) and FOLLOW (a non-member's watch stream: committed
entries from ``from_index`` on, or a snapshot when they are compacted).

A FOLLOW snapshot travels in chunks, each small enough for one mesh frame: a reply carries the
bytes of the member's stored snapshot (``snapshot_index``) from ``snapshot_offset`` in
``snapshot``, with the whole's ``snapshot_size`` and ``snapshot_sha256``; the follower asks for
the next chunk with ``snapshot_index``/``snapshot_offset`` in its next request and installs the
snapshot only once it holds all of it and the size and SHA-256 match.

APPEND-ONLY: type ids and enum values are the protocol.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

import msgpack

from consensus.codec import U32, U64, Codec
from consensus.kv_types import KeyValue
from consensus.messages import Entry

RAFT_MESH_CODEC: Codec[object] = Codec("raft-mesh", max_size=8 * 2**20)


class KvOp(enum.IntEnum):
    PROPOSE = 1
    READ = 2
    FOLLOW = 3


class KvStatus(enum.IntEnum):
    OK = 1
    CAS_FAILED = 2
    REJECTED = 3
    UNAVAILABLE = 4  # 503: not applied
    UNKNOWN = 5  # 504: outcome unknown
    COMPACTED = 6  # 410
    NOT_MEMBER = 7  # ask a group member instead (``members`` lists them)
    TOO_LARGE = 8  # the answer would not fit in one mesh frame (``reason`` says how large)


RAFT_BATCH_ID = 1
"""``RaftBatch``'s type id in ``RAFT_MESH_CODEC`` (``encode_batch`` writes it)."""


@RAFT_MESH_CODEC.register(RAFT_BATCH_ID)
@dataclass(frozen=True, slots=True)
class RaftBatch:
    messages: tuple[bytes, ...]


@RAFT_MESH_CODEC.register(2)
@dataclass(frozen=True, slots=True)
class KvRequest:
    id: U64
    op: KvOp
    command: bytes = b""  # PROPOSE: an encoded KV command
    key: str = ""  # READ: the key, or the prefix when ``prefix``
    prefix: bool = False
    linearizable: bool = True
    from_index: U64 = 0  # FOLLOW
    timeout_ms: U32 = 5000
    snapshot_index: U64 = 0  # FOLLOW: the snapshot partly received (0: none)
    snapshot_offset: U64 = 0  # FOLLOW: bytes of it held (the next chunk's offset)


@RAFT_MESH_CODEC.register(3)
@dataclass(frozen=True, slots=True)
class KvReply:
    id: U64
    status: KvStatus
    reason: str = ""
    revision: U64 = 0  # the store's revision (PROPOSE: after the command)
    kvs: tuple[KeyValue, ...] = ()  # READ results; PROPOSE: the previous value, if any
    current: U64 = 0  # CAS_FAILED: the key's mod revision
    changed: bool = False
    leader: str | None = None
    members: tuple[str, ...] = ()  # NOT_MEMBER / FOLLOW: voters and learners known here
    snapshot: bytes = b""  # FOLLOW: a chunk of a KV snapshot when ``from_index`` is compacted
    entries: tuple[Entry, ...] = ()  # FOLLOW: committed entries from ``from_index``
    applied: U64 = 0  # FOLLOW: the member's applied index
    snapshot_index: U64 = 0  # FOLLOW: the Raft index the snapshot reflects
    snapshot_offset: U64 = 0  # FOLLOW: where ``snapshot`` (the chunk) starts in the whole
    snapshot_size: U64 = 0  # FOLLOW: the whole snapshot's size (0: no snapshot in this reply)
    snapshot_sha256: bytes = b""  # FOLLOW: the whole snapshot's SHA-256


RAFT_MESH_CODEC.check_schemas()


def split_batches(encoded: list[bytes], max_body: int) -> tuple[list[RaftBatch], list[int]]:
    """Group encoded Raft messages, in order, into batches whose encoding is at most
    ``max_body`` bytes; returns the batches and the sizes of messages too large for any."""
    budget = max_body - 16  # the batch's type byte and array header
    batches: list[RaftBatch] = []
    too_big: list[int] = []
    batch: list[bytes] = []
    size = 0
    for b in encoded:
        cost = len(b) + 5  # its bin header
        if cost > budget:
            too_big.append(len(b))
            continue
        if batch and size + cost > budget:
            batches.append(RaftBatch(tuple(batch)))
            batch, size = [], 0
        batch.append(b)
        size += cost
    if batch:
        batches.append(RaftBatch(tuple(batch)))
    return batches, too_big


_RAFT_BATCH_TID = bytes((RAFT_BATCH_ID,))
_PACKER = msgpack.Packer(use_bin_type=True)


def encode_batch(encoded: Sequence[bytes]) -> bytes:
    """The RAFT body ``encode(RaftBatch(tuple(encoded)))`` gives, byte for byte, built in one
    join: the messages are already encoded, so the codec's schema pass over them and its
    intermediate copies are skipped (the size is the caller's to check, as ``split_batches``
    does)."""
    pack = _PACKER
    parts = [_RAFT_BATCH_TID, pack.pack_array_header(1), pack.pack_array_header(len(encoded))]
    for m in encoded:
        parts.append(_bin_header(len(m)))
        parts.append(m)
    return b"".join(parts)


def _bin_header(n: int) -> bytes:
    """msgpack's header of a bin of ``n`` bytes (bin 8, 16 or 32)."""
    if n < 1 << 8:
        return b"\xc4" + n.to_bytes(1, "big")
    if n < 1 << 16:
        return b"\xc5" + n.to_bytes(2, "big")
    return b"\xc6" + n.to_bytes(4, "big")


def encode(msg: RaftBatch | KvRequest | KvReply) -> bytes:
    return RAFT_MESH_CODEC.encode(msg)


def decode(data: bytes) -> object:
    """Raises only ``consensus.errors.DecodeError``."""
    return RAFT_MESH_CODEC.decode(data)
