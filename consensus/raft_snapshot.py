"""Sending a snapshot in chunks, putting it back together and checking it (Raft §7, Figure 13).

The leader cuts the snapshot's data into chunks of at most ``max_bytes_per_msg`` and sends them
one at a time (stop and wait: a follower's answer to one chunk asks for the next), so a snapshot
of any size fits the wire's frame limit and a lost chunk costs one chunk, not the whole.

**Sealed data.** Raft treats snapshot data as opaque, but a state machine may *seal* it
(``seal``): a 48-byte header — magic, the payload's length and its SHA-256 — before the payload.
The KV store seals every snapshot it takes. A receiver that has put a sealed snapshot back
together checks the length and the digest before handing it on; a stream that is cut short,
runs past its declared length or whose bytes differ is refused (``SnapshotReceiver.refused``
counts it, ``last_error`` says why), never installed, and the follower asks for it again from
offset 0. Unsealed data (other state machines, old data directories) is passed through as is.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field

from consensus.core import NodeId
from consensus.errors import DecodeError
from consensus.messages import InstallSnapshot, Snapshot, SnapshotMeta

SEAL_MAGIC = b"MMSNAP1\n"
_SEAL = struct.Struct(">8sQ32s")
SEAL_BYTES = _SEAL.size
"""Size of the header ``seal`` puts before the payload."""


class SnapshotCorruptError(DecodeError):
    """Sealed snapshot data whose length or SHA-256 does not match its header (``reason``)."""


def seal(payload: bytes) -> bytes:
    """``payload`` behind a header holding its length and SHA-256 (see the module docstring)."""
    return _SEAL.pack(SEAL_MAGIC, len(payload), hashlib.sha256(payload).digest()) + payload


def is_sealed(data: bytes | bytearray | memoryview) -> bool:
    """Whether ``data`` starts like sealed data (its header may still be cut short)."""
    return bytes(data[: len(SEAL_MAGIC)]) == SEAL_MAGIC


def sealed_length(data: bytes | bytearray | memoryview) -> int | None:
    """The whole length (header included) that sealed ``data`` declares; ``None`` while its
    header is incomplete or when ``data`` is not sealed."""
    if len(data) < SEAL_BYTES or not is_sealed(data):
        return None
    _, n, _ = _SEAL.unpack_from(data, 0)
    return int(SEAL_BYTES + n)


def unseal(data: bytes | bytearray | memoryview) -> memoryview:
    """The payload of sealed ``data``, checked. Raises ``SnapshotCorruptError`` when ``data`` is
    not sealed, is shorter or longer than declared, or its SHA-256 differs."""
    view = memoryview(data)
    if not is_sealed(view):
        raise SnapshotCorruptError("snapshot is not sealed (no header)")
    if len(view) < SEAL_BYTES:
        raise SnapshotCorruptError(f"snapshot header cut short: {len(view)} of {SEAL_BYTES} bytes")
    _, n, digest = _SEAL.unpack_from(view, 0)
    payload = view[SEAL_BYTES:]
    if len(payload) != n:
        what = "truncated" if len(payload) < n else "too long"
        raise SnapshotCorruptError(f"snapshot {what}: {len(payload)} bytes, header says {n}")
    if hashlib.sha256(payload).digest() != digest:
        raise SnapshotCorruptError(f"snapshot of {n} bytes fails its SHA-256 check (corrupt)")
    return payload


def check(data: bytes | bytearray | memoryview) -> None:
    """Raise ``SnapshotCorruptError`` if ``data`` is sealed and does not verify (unsealed data
    passes: there is nothing to check it against)."""
    if is_sealed(data):
        unseal(data)


@dataclass(slots=True)
class SnapshotDownload:
    """A snapshot received in order, in chunks, over a stream that states the whole's ``size``
    and SHA-256 up front (the KV follow stream); ``index`` names which snapshot it is."""

    index: int
    size: int
    sha256: bytes
    data: bytearray = field(default_factory=bytearray)

    def same(self, index: int, size: int, sha256: bytes) -> bool:
        """Whether a chunk so labelled belongs to this snapshot."""
        return (self.index, self.size, self.sha256) == (index, size, sha256)

    def take(self, offset: int, chunk: bytes) -> bool:
        """Take ``chunk`` if it continues what is held (else ignore it: ask for
        ``len(data)``). Returns True once the whole is held and checked. Raises
        ``SnapshotCorruptError`` when the stream runs past ``size``, ends short (an empty
        chunk before the end) or the whole fails its SHA-256 check."""
        if offset != len(self.data):
            return False
        if not chunk and len(self.data) < self.size:
            raise SnapshotCorruptError(
                f"snapshot at index {self.index} truncated: the stream ended at byte "
                f"{len(self.data)} of {self.size}"
            )
        self.data += chunk
        if len(self.data) > self.size:
            raise SnapshotCorruptError(
                f"snapshot at index {self.index} too long: {len(self.data)} bytes, "
                f"{self.size} declared"
            )
        if len(self.data) < self.size:
            return False
        if hashlib.sha256(self.data).digest() != self.sha256:
            raise SnapshotCorruptError(
                f"snapshot at index {self.index} ({self.size} bytes) fails its SHA-256 check"
            )
        return True


def snapshot_chunk(
    src: NodeId, dst: NodeId, term: int, snap: Snapshot, offset: int, max_bytes: int
) -> InstallSnapshot:
    """The ``InstallSnapshot`` carrying ``snap``'s data from ``offset`` (at most ``max_bytes``
    bytes; ``done`` on the last chunk, which an empty snapshot's only chunk also is)."""
    offset = min(offset, len(snap.data))
    end = min(len(snap.data), offset + max_bytes)
    chunk = Snapshot(snap.meta, snap.data[offset:end])
    return InstallSnapshot(src, dst, term, chunk, offset, end == len(snap.data))


@dataclass(slots=True)
class _Partial:
    leader: NodeId
    term: int
    meta: SnapshotMeta
    data: bytearray


class SnapshotReceiver:
    """A follower's partly received snapshot (one at a time: a new one replaces it).

    ``refused`` counts sealed snapshots refused (cut short, too long or corrupt), ``installed``
    the snapshots handed on whole; ``last_error`` says why the last one was refused. With
    ``require_sealed`` (a state machine that always seals, like the KV) unsealed data is
    refused too, so a damaged header cannot pass a snapshot off as unchecked data."""

    def __init__(self, require_sealed: bool = False) -> None:
        self.require_sealed = require_sealed
        self._partial: _Partial | None = None
        self.refused = 0
        self.installed = 0
        self.last_error = ""

    def receive(self, msg: InstallSnapshot) -> Snapshot | int:
        """Take one chunk. Returns the whole snapshot when ``msg`` completes it (checked when
        sealed), else the number of bytes now held (the offset to ask for next): a chunk that
        does not continue what is held, from this leader and term for this snapshot, is not
        taken, and the answer asks for what is actually missing. A refused snapshot is
        dropped and the answer is 0 (send it again from the start)."""
        p = self._partial
        same = (
            p is not None
            and p.leader == msg.src
            and p.term == msg.term
            and p.meta == msg.snapshot.meta
        )
        if msg.offset == 0:
            p = _Partial(msg.src, msg.term, msg.snapshot.meta, bytearray())
            self._partial = p
        elif not same:
            self._partial = None
            return 0
        assert p is not None
        if msg.offset != len(p.data):
            return len(p.data)
        p.data += msg.snapshot.data
        if self.require_sealed and len(p.data) >= len(SEAL_MAGIC) and not is_sealed(p.data):
            return self._refuse(p, "not sealed (no header): its bytes cannot be checked")
        declared = sealed_length(p.data)
        if declared is not None and len(p.data) > declared:
            return self._refuse(p, f"{len(p.data)} bytes received, the header says {declared}")
        if not msg.done:
            return len(p.data)
        self._partial = None
        try:
            if self.require_sealed:
                unseal(p.data)
            else:
                check(p.data)
        except SnapshotCorruptError as e:
            return self._refuse(p, e.reason)
        self.installed += 1
        return Snapshot(p.meta, bytes(p.data))

    def _refuse(self, p: _Partial, reason: str) -> int:
        self._partial = None
        self.refused += 1
        self.last_error = (
            f"snapshot at index {p.meta.index} from {p.leader} (term {p.term}) refused: {reason}"
        )
        return 0

    def clear(self) -> None:
        """Forget a partly received snapshot (its leader's term is over)."""
        self._partial = None
