"""The transmit-limited broadcast queue of SWIM dissemination (memberlist's
``TransmitLimitedQueue``).

Updates wait here to be piggybacked on outgoing packets. Contract:

- at most one update per member: a newer update about a node replaces (invalidates) the queued one;
- ``take`` prefers updates sent the fewest times, then the newest, and packs as many as fit in the
  byte budget; each taken update counts one transmission and is dropped after ``limit`` of them;
- order is fully determined by insertion order (no hash-order iteration).
"""

from __future__ import annotations

from dataclasses import dataclass

from consensus.core import NodeId
from consensus.swim_messages import Update, update_size

LIST_HEADER_SLACK = 2
"""Extra bytes an update list's array header may take beyond 15 items (msgpack array16)."""


@dataclass(slots=True)
class _Entry:
    update: Update
    size: int
    order: int
    transmits: int = 0


class BroadcastQueue:
    """Pending updates, at most one per member, each sent at most ``limit`` times."""

    __slots__ = ("_counter", "_entries")

    def __init__(self) -> None:
        self._entries: dict[NodeId, _Entry] = {}
        self._counter = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, node: NodeId) -> bool:
        return node in self._entries

    def queue(self, update: Update) -> None:
        """Queue ``update``, replacing any queued update about the same node."""
        self._counter += 1
        self._entries[update.node] = _Entry(update, update_size(update), self._counter)

    def pending(self, node: NodeId) -> Update | None:
        """The update queued about ``node``, if any."""
        entry = self._entries.get(node)
        return entry.update if entry is not None else None

    def take(self, budget: int, limit: int) -> tuple[tuple[Update, ...], int]:
        """Updates that fit in ``budget`` bytes, fewest-sent first, then newest first, and the
        bytes they add to a packet (an upper bound).

        Each returned update counts one transmission; those reaching ``limit`` are removed.
        """
        entries = self._entries
        if not entries or budget <= LIST_HEADER_SLACK:
            return (), 0
        budget -= LIST_HEADER_SLACK
        used = LIST_HEADER_SLACK
        ranked = sorted(entries.values(), key=lambda e: (e.transmits, -e.order))
        smallest = min(e.size for e in ranked)
        out: list[Update] = []
        for entry in ranked:
            if budget < smallest:
                break
            if entry.size > budget:
                continue
            budget -= entry.size
            used += entry.size
            out.append(entry.update)
            entry.transmits += 1
            if entry.transmits >= limit:
                del entries[entry.update.node]
        return tuple(out), used
