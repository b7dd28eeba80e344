"""One-way sends over the mesh's mutual-TLS streams, with a queue and a sender task per peer.

Raft must never wait on the network in its Ready loop, and a request/response stream would
hold its connection while the answer is computed (a forwarded proposal waits for a commit
that needs the very same connection), so every RAFT and KV envelope is one-way and replies
travel back as envelopes of their own. A peer that cannot be reached loses what was queued for
it (Raft retransmits; a KV caller times out); a queue holds at most ``max_queue`` bodies.

Latency: ``send`` writes to the peer's pooled stream at once (``MeshStreams.send_now``) when
nothing is queued or being sent for that peer, so a Raft message leaves in the event-loop turn
that produced it (a leader's appends reach the followers while its own fsync runs). Otherwise
the body is queued, and the peer's sender task writes everything queued as one write with one
``drain``. Order per peer is kept either way.

A body too large for a mesh frame (``LocalProtocolError`` from the framing) is dropped, counted
in ``oversize`` and logged; the other bodies of its batch still go, and the peer's sender task
keeps running.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable

from consensus.errors import LocalProtocolError
from moltmesh.mesh.streams import MeshStreams, StreamError
from moltmesh.mesh.wire import Channel
from moltmesh.raft.tasks import cancel_and_wait

log = logging.getLogger("moltmesh.raft.transport")


class _PeerQueue:
    def __init__(self) -> None:
        self.items: collections.deque[tuple[Channel, bytes]] = collections.deque()
        self.ready = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.busy = False  # the sender task holds items popped from ``items``


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
        self.sent_now = 0  # bodies written at once (the rest went through a sender task)
        self.oversize = 0  # bodies too large for a frame: never sent
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
        if not q.items and not q.busy:
            try:
                if self.streams.send_now(dst, channel, body):
                    self.sent_now += 1
                    return True
            except LocalProtocolError as e:
                self._oversize(dst, channel, len(body), e)
                return False
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
            batch = list(q.items)
            q.items.clear()
            address = self.addresses().get(dst)
            if address is None:
                self.dropped += len(batch)
                continue
            q.busy = True
            try:
                await self._send_batch(dst, address, batch)
            except StreamError as e:
                self.send_errors += 1
                # Whatever was queued meanwhile is stale; Raft resends what matters.
                self.dropped += len(q.items)
                q.items.clear()
                log.debug("raft send to %s failed: %s", dst, e.reason)
                await asyncio.sleep(0.05)  # a refused peer is not hammered
            finally:
                q.busy = False

    async def _send_batch(self, dst: str, address: str, batch: list[tuple[Channel, bytes]]) -> None:
        """One write for ``batch``; if a body in it cannot be framed, the batch again one
        body at a time without the ones that cannot (counted)."""
        try:
            await self.streams.send_many(dst, address, batch)
            return
        except LocalProtocolError:
            pass  # nothing was written: framing happens before the write
        for channel, body in batch:
            try:
                await self.streams.send_many(dst, address, [(channel, body)])
            except LocalProtocolError as e:
                self._oversize(dst, channel, len(body), e)

    def _oversize(self, dst: str, channel: Channel, size: int, error: Exception) -> None:
        self.oversize += 1
        log.warning("not sent to %s: a %s body of %d bytes does not fit a mesh frame (%s)",
                    dst, channel.name, size, error)  # fmt: skip

    async def close(self) -> None:
        self._closed = True
        await cancel_and_wait(*(q.task for q in self._peers.values()))
        self._peers.clear()
