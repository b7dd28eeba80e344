"""ReadIndex bookkeeping on a leader (Raft thesis §6.4, etcd's ``readOnly``).

A read request records the leader's commit index when it arrives, then waits for a round of
heartbeats that a quorum of voters acknowledges *after* it arrived: that proves the node was
still the leader when the read came in, so no other leader can have committed anything newer.
Each read starts a round; a heartbeat's ``context`` carries the round number (8 bytes, big
endian), and a quorum of acknowledgements for round *r* releases every request of rounds ≤ *r*.

The leader must also have committed an entry of its own term before it serves reads (before
that its commit index may lag what earlier leaders committed); ``RaftNode`` holds requests back
until then.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from consensus.core import NodeId

ROUND_BYTES = 8


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """One read waiting on a leader. ``requester`` is the follower that forwarded it, or
    ``None`` for a read of the leader's own driver."""

    context: bytes
    requester: NodeId | None
    index: int = 0
    round: int = 0


def round_context(round_no: int) -> bytes:
    """The heartbeat context naming round ``round_no``."""
    return round_no.to_bytes(ROUND_BYTES, "big")


def parse_round(context: bytes) -> int | None:
    """The round a heartbeat response acknowledges, or ``None`` if it names none."""
    if len(context) != ROUND_BYTES:
        return None
    return int.from_bytes(context, "big")


class ReadOnly:
    """Pending ReadIndex requests of one leader term, in arrival order."""

    def __init__(self, self_id: NodeId) -> None:
        self._id = self_id
        self._round = 0
        self._queue: deque[ReadRequest] = deque()
        self._acks: dict[int, set[NodeId]] = {}

    def __len__(self) -> int:
        return len(self._queue)

    def start(self, context: bytes, requester: NodeId | None, index: int) -> int:
        """Queue a read of commit index ``index``; returns the new round whose heartbeats must
        be sent now (their acknowledgement by a quorum releases it)."""
        self._round += 1
        self._queue.append(ReadRequest(context, requester, index, self._round))
        self._acks[self._round] = {self._id}
        return self._round

    def ack(
        self, round_no: int, voter: NodeId, is_quorum: Callable[[Iterable[NodeId]], bool]
    ) -> list[ReadRequest]:
        """``voter`` acknowledged round ``round_no``. Returns the requests this releases
        (those of rounds ≤ ``round_no``, oldest first) once ``is_quorum`` holds for the
        round's acknowledgements; otherwise nothing."""
        acks = self._acks.get(round_no)
        if acks is None:
            return []
        acks.add(voter)
        if not is_quorum(acks):
            return []
        return self._release(round_no)

    def release_confirmed(self, is_quorum: Callable[[Iterable[NodeId]], bool]) -> list[ReadRequest]:
        """Release what the acknowledgements already received confirm (used after the
        membership changed, which may have made a smaller quorum enough)."""
        confirmed = [r for r, acks in self._acks.items() if is_quorum(acks)]
        return self._release(max(confirmed)) if confirmed else []

    def drain(self) -> list[ReadRequest]:
        """Forget every pending request (the node stopped leading) and return them."""
        out = list(self._queue)
        self._queue.clear()
        self._acks.clear()
        return out

    def _release(self, round_no: int) -> list[ReadRequest]:
        out: list[ReadRequest] = []
        while self._queue and self._queue[0].round <= round_no:
            out.append(self._queue.popleft())
        for r in [r for r in self._acks if r <= round_no]:
            del self._acks[r]
        return out
