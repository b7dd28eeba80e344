"""The Raft transport survives a body too large for a mesh frame (issue 8): it is dropped,
counted and logged, and the peer's sender keeps sending what follows."""

from __future__ import annotations

import asyncio

from consensus.errors import LocalProtocolError
from moltmesh.mesh.wire import Channel
from moltmesh.raft.transport import MeshTransport

LIMIT = 100


class FramingStreams:
    """Stands in for ``MeshStreams`` on the sending side: frames as the mesh does (a body over
    the limit raises ``LocalProtocolError`` before anything is written) and records writes."""

    def __init__(self, idle: bool) -> None:
        self.idle = idle  # an idle pooled stream exists: send_now writes at once
        self.written: list[bytes] = []
        self.wrote = asyncio.Event()

    def _frame(self, items: list[tuple[Channel, bytes]]) -> None:
        if any(len(body) > LIMIT for _, body in items):
            raise LocalProtocolError("envelope larger than the frame limit")
        self.written.extend(body for _, body in items)
        self.wrote.set()

    def send_now(self, node_id: str, channel: Channel, body: bytes) -> bool:
        if not self.idle:
            return False
        self._frame([(channel, body)])
        return True

    async def send_many(self, node_id: str, address: str, items: list[tuple[Channel, bytes]]):  # type: ignore[no-untyped-def]
        await asyncio.sleep(0)
        self._frame(items)
        return node_id


async def until(cond) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(5):
        while not cond():
            await asyncio.sleep(0.001)


async def test_an_oversize_body_in_a_batch_is_dropped_and_the_rest_still_goes() -> None:
    streams = FramingStreams(idle=False)
    t = MeshTransport(streams, lambda: {"b": "127.0.0.1:1"})  # type: ignore[arg-type]
    for body in (b"one", b"x" * (LIMIT + 1), b"two"):
        assert t.send("b", Channel.RAFT, body)
    await until(lambda: len(streams.written) == 2)
    assert streams.written == [b"one", b"two"] and t.oversize == 1
    assert t.send("b", Channel.RAFT, b"three")  # the sender task is alive
    await until(lambda: len(streams.written) == 3)
    await t.close()


async def test_an_oversize_body_written_at_once_is_refused_not_raised() -> None:
    streams = FramingStreams(idle=True)
    t = MeshTransport(streams, lambda: {"b": "127.0.0.1:1"})  # type: ignore[arg-type]
    assert not t.send("b", Channel.RAFT, b"x" * (LIMIT + 1))
    assert t.send("b", Channel.RAFT, b"ok") and streams.written == [b"ok"]
    assert t.oversize == 1 and t.sent_now == 1
    await t.close()
