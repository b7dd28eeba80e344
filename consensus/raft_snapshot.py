"""Sending a snapshot in chunks, and putting it back together (Raft §7, Figure 13).

The leader cuts the snapshot's data into chunks of at most ``max_bytes_per_msg`` and sends them
one at a time (stop and wait: a follower's answer to one chunk asks for the next), so a snapshot
of any size fits the wire's frame limit and a lost chunk costs one chunk, not the whole.
"""

from __future__ import annotations

from dataclasses import dataclass

from consensus.core import NodeId
from consensus.messages import InstallSnapshot, Snapshot, SnapshotMeta


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
    """A follower's partly received snapshot (one at a time: a new one replaces it)."""

    def __init__(self) -> None:
        self._partial: _Partial | None = None

    def receive(self, msg: InstallSnapshot) -> Snapshot | int:
        """Take one chunk. Returns the whole snapshot when ``msg`` completes it, else the
        number of bytes now held (the offset to ask for next): a chunk that does not continue
        what is held, from this leader and term for this snapshot, is not taken, and the
        answer asks for what is actually missing."""
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
        if not msg.done:
            return len(p.data)
        self._partial = None
        return Snapshot(p.meta, bytes(p.data))

    def clear(self) -> None:
        """Forget a partly received snapshot (its leader's term is over)."""
        self._partial = None
