"""One-way sends over the mesh's mutual-TLS streams, with a queue and a sender task per peer.

Raft must never wait on the network in its Ready loop, and a request/response stream would
hold its connection while the answer is computed (a forwarded proposal waits for a commit
that needs the very same connection), so every RAFT and KV envelope is one-way and replies
travel back as envelopes of their own. A peer that cannot be reached loses what was queued for
it (Raft retransmits; a KV caller times out); a queue holds at most ``max_queue`` bodies.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable

from moltmesh.mesh.streams import MeshStreams, StreamError
from moltmesh.mesh.wire import Channel
from moltmesh.raft.tasks import cancel_and_wait

log = logging.getLogger("moltmesh.raft.transport")


class _PeerQueue:
    def __init__(self) -> None:
        self.items: collections.deque[tuple[Channel, bytes]] = collections.deque()
        self.ready = asyncio.Event()
        self.task: asyncio.Task[None] | None = None


class MeshTransport:
    """``send(dst, channel, body)`` queues; ``addresses()`` maps live members to addresses."""

    def __init__(
        self,
        streams: MeshStreams,
        addresses: Callable[[], dict[str, str]],
        max_queue: int = 4096,
    ) -> None:
        self.streams = streams
        self.addresses = addresses
        self.max_queue = max_queue
        self.dropped = 0
        self.send_errors = 0
        self._peers: dict[str, _PeerQueue] = {}
        self._closed = False

    def send(self, dst: str, channel: Channel, body: bytes) -> bool:
        """Queue ``body`` for ``dst``; False when dropped (queue full or transport closed)."""
        if self._closed:
            return False
        q = self._peers.get(dst)
        if q is None:
            q = self._peers[dst] = _PeerQueue()
            q.task = asyncio.create_task(self._pump(dst, q), name=f"raft-send-{dst}")
        if len(q.items) >= self.max_queue:
            self.dropped += 1
            return False
        q.items.append((channel, body))
        q.ready.set()
        return True

    async def _pump(self, dst: str, q: _PeerQueue) -> None:
        while True:
            if not q.items:
                q.ready.clear()
                await q.ready.wait()
                continue
            channel, body = q.items.popleft()
            address = self.addresses().get(dst)
            if address is None:
                self.dropped += 1
                continue
            try:
                await self.streams.send(dst, address, channel, body)
            except StreamError as e:
                self.send_errors += 1
                # Whatever was queued meanwhile is stale; Raft resends what matters.
                self.dropped += len(q.items)
                q.items.clear()
                log.debug("raft send to %s failed: %s", dst, e.reason)
                await asyncio.sleep(0.05)  # a refused peer is not hammered

    async def close(self) -> None:
        self._closed = True
        await cancel_and_wait(*(q.task for q in self._peers.values()))
        self._peers.clear()
