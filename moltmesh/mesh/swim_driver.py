"""The asyncio driver of the SWIM core (``consensus.swim``) over the mesh's sealed UDP and TLS.

The core is sans-I/O; this driver owns its clock (``time.monotonic`` in µs), its timers (it
sleeps exactly until ``core.next_deadline()``, or until an inbound message or a metadata change
wakes it), and its I/O:

- packets (ping, ack, nack, indirect ping, gossip) go as sealed datagrams on ``Channel.SWIM``;
  a packet whose ``source`` is not its authenticated sender is dropped as garbage;
- push-pull goes over a mutual-TLS stream as one request and its response; the responder's
  certificate must name the member we meant (any member for a seed address) and the
  ``PushPull.source`` must be that certificate's node id, both ways;
- events (joined, suspected, dead, ...) are handed to every subscriber queue (``subscribe``).

``stop`` leaves gracefully: it broadcasts our departure and keeps driving the core until the
departure was gossiped (``leave_complete``) or ``leave_timeout_s`` passed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable

from consensus.errors import DecodeError, LocalProtocolError
from consensus.swim import SwimCore
from consensus.swim_config import SwimConfig, lan, local, wan
from consensus.swim_messages import SWIM_CODEC, Meta, Ping, PushPull, SwimMessage
from consensus.swim_types import MemberView, Outgoing, SwimEvent, SwimReady
from moltmesh.logs import log_event
from moltmesh.mesh.drops import DropReason, Transport
from moltmesh.mesh.service import MeshService
from moltmesh.mesh.streams import Peer, StreamError
from moltmesh.mesh.wire import Channel, Envelope

log = logging.getLogger("moltmesh.mesh.swim")

PRESETS: dict[str, Callable[[], SwimConfig]] = {"lan": lan, "wan": wan, "local": local}
EVENT_QUEUE = 10_000  # events kept per subscriber that does not keep up (oldest dropped)


def monotonic_us() -> int:
    return time.monotonic_ns() // 1000


class SwimDriver:
    """Runs one node's SWIM membership on a ``MeshService``."""

    def __init__(
        self,
        service: MeshService,
        config: SwimConfig,
        meta: Meta,
        seeds: list[str] | None = None,
        rng: random.Random | None = None,
        leave_timeout_s: float = 3.0,
        clock: Callable[[], int] = monotonic_us,
    ) -> None:
        self.service = service
        self.config = config
        self.clock = clock
        self.leave_timeout_s = leave_timeout_s
        own = {service.address}
        self.seeds = [s for s in (seeds or []) if s not in own]
        self._rng = rng or random.Random()
        self._initial_meta = meta
        self.core: SwimCore | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._streams: set[asyncio.Task[None]] = set()
        self._subscribers: list[asyncio.Queue[SwimEvent]] = []
        self._previous_gossip = service.on_gossip
        self.sent: Counter[str] = Counter()  # messages sent by type name
        self.events_seen: Counter[str] = Counter()  # events by kind value
        self.stream_failures = 0

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        now = self.clock()
        self.core = SwimCore(
            self.service.node_id, self._initial_meta, self.config, self._rng, now,
            seeds=self.seeds,
        )  # fmt: skip
        previous = self._previous_gossip

        def on_gossip(env: Envelope, addr: tuple[str, int]) -> None:
            if env.channel is Channel.SWIM:
                self._on_packet(env)
            else:
                previous(env, addr)

        self.service.on_gossip = on_gossip
        self.service.streams.handlers[Channel.SWIM] = self._on_stream
        self._flush()
        self._task = asyncio.create_task(self._run(), name=f"swim-{self.service.node_id}")
        log_event(log, "swim.started", node=self.service.node_id, seeds=self.seeds)

    async def stop(self) -> None:
        """Leave gracefully, then stop driving the core."""
        core = self.core
        if core is None or self._task is None:
            return
        core.leave(self.clock())
        self._flush()
        self._wake.set()
        deadline = time.monotonic() + self.leave_timeout_s
        while not core.leave_complete() and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._sleep_s()):
                    self._wake.clear()
                    await self._wake.wait()
            core.tick(self.clock())
            self._flush()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        for task in list(self._streams):
            task.cancel()
        await asyncio.gather(*self._streams, return_exceptions=True)
        self.service.on_gossip = self._previous_gossip
        self.service.streams.handlers.pop(Channel.SWIM, None)
        self._task = None
        log_event(log, "swim.stopped", node=self.service.node_id, left=core.leave_complete())

    def _sleep_s(self) -> float | None:
        assert self.core is not None
        deadline = self.core.next_deadline()
        return None if deadline is None else max(0.0, (deadline - self.clock()) / 1e6)

    async def _run(self) -> None:
        core = self.core
        assert core is not None
        while True:
            try:
                async with asyncio.timeout(self._sleep_s()):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            core.tick(self.clock())
            self._flush()

    # -- public view ----------------------------------------------------------------------------

    def members(self) -> list[MemberView]:
        """Every known member (self included), sorted by node id."""
        return self.core.members() if self.core is not None else []

    def set_meta(self, meta: Meta) -> None:
        """Publish new metadata for this node (gossiped with a new metadata version)."""
        if self.core is None:
            self._initial_meta = meta
            return
        self.core.set_meta(meta, self.clock())
        self._flush()
        self._wake.set()

    def join(self, addresses: list[str]) -> None:
        """Push-pull with these addresses now (peers found after start, e.g. by mDNS)."""
        if self.core is None:
            self.seeds = sorted(set(self.seeds) | set(addresses))
            return
        self.core.join(addresses, self.clock())
        self._flush()
        self._wake.set()

    def subscribe(self) -> asyncio.Queue[SwimEvent]:
        """A queue receiving every membership event from now on."""
        queue: asyncio.Queue[SwimEvent] = asyncio.Queue(EVENT_QUEUE)
        self._subscribers.append(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[SwimEvent]) -> None:
        with contextlib.suppress(ValueError):
            self._subscribers.remove(queue)

    async def events(self) -> AsyncIterator[SwimEvent]:
        """Membership events as they happen (until the consumer stops iterating)."""
        queue = self.subscribe()
        try:
            while True:
                yield await queue.get()
        finally:
            self.unsubscribe(queue)

    # -- inbound --------------------------------------------------------------------------------

    def _decode(self, body: bytes, transport: Transport) -> SwimMessage | None:
        try:
            return SWIM_CODEC.decode(body)  # type: ignore[return-value]
        except DecodeError as e:
            self.service.drops.add(transport, DropReason.GARBAGE)
            log_event(log, "swim.bad_message", why=e.reason, level=logging.DEBUG)
            return None

    def _on_packet(self, env: Envelope) -> None:
        msg = self._decode(env.body, Transport.UDP)
        if msg is None or self.core is None:
            return
        if isinstance(msg, PushPull) or msg.source != env.sender:
            self.service.drops.add(Transport.UDP, DropReason.GARBAGE)
            return
        self.core.step(msg, self.clock())
        self._flush()
        self._wake.set()

    async def _on_stream(self, peer: Peer, env: Envelope) -> bytes | None:
        msg = self._decode(env.body, Transport.TCP)
        core = self.core
        if msg is None or core is None:
            return None
        if not isinstance(msg, PushPull) or msg.response or msg.source != peer.node_id:
            self.service.drops.add(Transport.TCP, DropReason.GARBAGE)
            return None
        core.step(msg, self.clock())
        ready = core.ready()
        reply = next(
            (o for o in ready.streams
             if isinstance(o.msg, PushPull) and o.msg.response and o.to == peer.node_id),
            None,
        )  # fmt: skip
        if reply is not None:
            ready.streams.remove(reply)
            self.sent["PushPull"] += 1
        self._dispatch(ready)
        self._wake.set()
        return SWIM_CODEC.encode(reply.msg) if reply is not None else None

    # -- outbound -------------------------------------------------------------------------------

    def _flush(self) -> None:
        if self.core is not None and self.core.has_ready():
            self._dispatch(self.core.ready())

    def _dispatch(self, ready: SwimReady) -> None:
        gossip = self.service.gossip
        for out in ready.packets:
            if gossip is None:
                break
            try:
                gossip.send(out.addr, Channel.SWIM, SWIM_CODEC.encode(out.msg))
                self.sent[type(out.msg).__name__] += 1
            except (LocalProtocolError, OSError, ValueError) as e:
                log_event(log, "swim.send_failed", to=out.to, addr=out.addr, error=str(e),
                          level=logging.DEBUG)  # fmt: skip
        for out in ready.streams:
            if isinstance(out.msg, PushPull) and not out.msg.response:
                task = asyncio.create_task(self._push_pull(out))
                self._streams.add(task)
                task.add_done_callback(self._streams.discard)
        for event in ready.events:
            self.events_seen[event.kind.value] += 1
            log_event(log, f"swim.{event.kind.value}", node=event.node,
                      incarnation=event.incarnation, source=event.source)  # fmt: skip
            for queue in self._subscribers:
                if queue.full():
                    queue.get_nowait()
                queue.put_nowait(event)

    async def _push_pull(self, out: Outgoing) -> None:
        assert isinstance(out.msg, PushPull)
        try:
            peer_id, raw = await self.service.streams.request(
                out.to or None, out.addr, Channel.SWIM, SWIM_CODEC.encode(out.msg)
            )
        except StreamError as e:
            self.stream_failures += 1
            log_event(log, "swim.push_pull_failed", to=out.to or out.addr, error=e.reason,
                      level=logging.DEBUG)  # fmt: skip
            return
        self.sent["PushPull"] += 1
        if peer_id == self.service.node_id or self.core is None:
            return  # a seed address that turned out to be ourselves
        msg = self._decode(raw, Transport.TCP)
        if msg is None:
            return
        if not isinstance(msg, PushPull) or not msg.response or msg.source != peer_id:
            self.service.drops.add(Transport.TCP, DropReason.GARBAGE)
            return
        self.core.step(msg, self.clock())
        self._flush()
        self._wake.set()

    @property
    def probes_sent(self) -> int:
        return self.sent[Ping.__name__]
