"""``Discovery``: announce this node over mDNS and report peers of the same mesh as candidates.

    async with Discovery(advert, config.discovery) as discovery:
        async for event in discovery.events():
            ...  # event.kind is found / updated / goodbye; event.candidate says where to try

Contracts:

- **A candidate is a hint.** It says a device on the link claims to be of our mesh (same mesh id
  and CA fingerprint) and where it might be reached. The mesh layer admits a peer only through
  its authenticated path; nothing here is trusted.
- **Foreign peers** (another mesh id or CA) are seen, counted and kept in ``foreign()``, never
  reported as candidates. Malformed TXT records are ignored and counted (``stats.malformed``).
- **Goodbye means a clean stop.** ``GOODBYE`` is reported when a peer unregisters (its
  goodbye packets arrive), and otherwise only when its service record expires unrefreshed
  (python-zeroconf's PTR TTL: 75 minutes). A cut link, a crashed device or a pulled cable is
  therefore never reported as removed within any time that matters: liveness comes from SWIM,
  never from discovery, and the mesh layer must not treat a missing goodbye as "alive".
- **Shutdown sends the goodbye.** ``stop`` awaits the unregistration *and* the announcement task
  it returns (python-zeroconf's two awaits); without the second, peers never see the goodbye.
- **Handlers only enqueue.** python-zeroconf calls browser handlers synchronously, with fixed
  keyword names, and already inside the browser's constructor for cached services; ours puts the
  change on a queue and returns. Resolution (SRV, TXT, A records) runs in tasks, one per service
  name at a time, so changes to one peer are applied in order and a slow peer delays no other.
- **Interfaces come from config**: loopback only by default; see ``interfaces``.
- **Questions are multicast (QM).** Where several mDNS stacks share port 5353 on one host (tests
  on loopback, a device also running avahi), a unicast answer lands on whichever socket the
  kernel picks; multicast answers reach every stack. (python-zeroconf's name-clash probe still
  asks for unicast answers, so a clash is reliably detected only between separate hosts.)

Events go to a bounded queue read with ``events()``/``next_event()``; when nobody reads, events
beyond ``EVENT_QUEUE_SIZE`` are dropped and counted (``stats.dropped_events``) rather than held.
``candidates()`` is always the current view.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from zeroconf import (
    DNSQuestionType,
    IPVersion,
    NonUniqueNameException,
    ServiceStateChange,
    Zeroconf,
)
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from moltmesh.config import DiscoveryConfig
from moltmesh.discovery.advert import (
    SERVICE_TYPE,
    Advert,
    Candidate,
    DiscoveryEvent,
    DiscoveryEventKind,
    MalformedAdvert,
    decode_txt,
    encode_txt,
)
from moltmesh.discovery.interfaces import InterfacePlan, plan_interfaces
from moltmesh.logs import log_event

log = logging.getLogger("moltmesh.discovery")

EVENT_QUEUE_SIZE = 1024


class DiscoveryError(RuntimeError):
    """Discovery cannot start; the message says why (bad interface, name clash)."""


@dataclass
class DiscoveryStats:
    """Counters since start. Plain ints, read by metrics and tests."""

    found: int = 0
    updated: int = 0
    goodbyes: int = 0
    foreign_seen: int = 0  # distinct foreign services seen (re-seen after goodbye counts again)
    malformed: int = 0  # TXT records that failed to decode, each time one arrived
    unresolved: int = 0  # services whose records did not arrive within resolve_timeout_ms
    dropped_events: int = 0  # events not queued because the queue was full


class Discovery:
    """mDNS announcement and browsing for one node. One instance runs on one event loop."""

    def __init__(
        self,
        advert: Advert,
        config: DiscoveryConfig | None = None,
        *,
        on_foreign: Callable[[Advert, tuple[str, ...]], None] | None = None,
    ) -> None:
        self.advert = advert
        self.config = config or DiscoveryConfig()
        self.stats = DiscoveryStats()
        self.plan: InterfacePlan | None = None
        self._on_foreign = on_foreign
        self._zc: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._info: AsyncServiceInfo | None = None
        self._registered = False
        self._changes: asyncio.Queue[tuple[str, ServiceStateChange]] = asyncio.Queue()
        self._events: asyncio.Queue[DiscoveryEvent] = asyncio.Queue(EVENT_QUEUE_SIZE)
        self._pending: dict[str, ServiceStateChange] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._dispatcher: asyncio.Task[None] | None = None
        self._candidates: dict[str, Candidate] = {}  # by service name
        self._foreign: dict[str, tuple[Advert, tuple[str, ...]]] = {}  # by service name

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> Discovery:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Browse, then register and announce; returns once the announcement has gone out.

        Raises ``DiscoveryError`` when an interface entry matches nothing, the mDNS sockets
        cannot be opened, or another device already announces our node id (a copied data
        directory). With ``enabled = false`` it does nothing: no sockets, no candidates.
        """
        if self._zc is not None:
            raise RuntimeError("discovery already started")
        if not self.config.enabled:
            log_event(log, "discovery.disabled", node=self.advert.node_id)
            return
        try:
            self.plan = plan_interfaces(list(self.config.interfaces))
        except ValueError as e:
            raise DiscoveryError(str(e)) from e
        try:
            self._zc = AsyncZeroconf(interfaces=list(self.plan.listen), ip_version=IPVersion.V4Only)
        except OSError as e:
            raise DiscoveryError(
                f"cannot open mDNS sockets on {list(self.plan.listen)}: {e}"
            ) from e
        try:
            await self._browse_and_register()
        except BaseException as e:  # leave nothing open behind a failed or cancelled start
            await self._close()
            if isinstance(e, NonUniqueNameException):
                raise DiscoveryError(
                    f"another device already announces node id {self.advert.node_id} on this "
                    "network: was a data directory copied?"
                ) from e
            raise
        log_event(
            log,
            "discovery.started",
            node=self.advert.node_id,
            mesh=self.advert.mesh_id,
            interfaces=list(self.plan.listen),
            announce=list(self.plan.announce),
        )

    async def _browse_and_register(self) -> None:
        assert self._zc is not None
        self._changes = asyncio.Queue()
        self._dispatcher = asyncio.create_task(self._dispatch(), name="discovery-dispatch")
        self._browser = AsyncServiceBrowser(
            self._zc.zeroconf,
            SERVICE_TYPE,
            handlers=[self._on_service_state_change],
            question_type=DNSQuestionType.QM,
        )
        self._info = self._service_info(self.advert)
        announce = await self._zc.async_register_service(
            self._info, cooperating_responders=not self.config.probe
        )
        self._registered = True
        await announce

    async def stop(self) -> None:
        """Send the goodbye (both awaits), stop browsing and release the sockets. Idempotent."""
        if self._zc is None:
            return
        if self._registered and self._info is not None:
            self._registered = False
            goodbye = await self._zc.async_unregister_service(self._info)
            await goodbye
        await self._close()
        log_event(log, "discovery.stopped", node=self.advert.node_id)

    async def _close(self) -> None:
        if self._browser is not None:
            await self._browser.async_cancel()
            self._browser = None
        tasks = [t for t in (self._dispatcher, *self._workers.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._dispatcher = None
        self._workers.clear()
        self._pending.clear()
        self._candidates.clear()  # stopped: nothing is seen any more
        self._foreign.clear()
        self._registered = False
        if self._zc is not None:
            await self._zc.async_close()
            self._zc = None

    async def update(self, advert: Advert) -> None:
        """Announce changed ports or protocol; the node id cannot change while running."""
        if advert.node_id != self.advert.node_id:
            raise ValueError("the node id of a running discovery cannot change")
        self.advert = advert
        if self._zc is None or not self._registered:
            return
        self._info = self._service_info(advert)
        announce = await self._zc.async_update_service(self._info)
        await announce

    def _service_info(self, advert: Advert) -> AsyncServiceInfo:
        assert self.plan is not None
        return AsyncServiceInfo(
            SERVICE_TYPE,
            advert.instance_name,
            parsed_addresses=list(self.plan.announce),
            port=advert.mesh_port,
            properties=encode_txt(advert),
            server=advert.server,
        )

    # -- what was seen ---------------------------------------------------------------------

    def candidates(self) -> dict[str, Candidate]:
        """The current candidates by node id (a copy)."""
        return {c.node_id: c for c in self._candidates.values()}

    def foreign(self) -> dict[str, Advert]:
        """Peers of other meshes currently seen, by node id (a copy)."""
        return {advert.node_id: advert for advert, _ in self._foreign.values()}

    async def next_event(self) -> DiscoveryEvent:
        """Wait for the next candidate event."""
        return await self._events.get()

    async def events(self) -> AsyncIterator[DiscoveryEvent]:
        """Candidate events, in the order they were decoded, until the task is cancelled."""
        while True:
            yield await self._events.get()

    # -- browser side ----------------------------------------------------------------------

    def _on_service_state_change(
        self,
        zeroconf: Zeroconf,
        service_type: str,
        name: str,
        state_change: ServiceStateChange,
    ) -> None:
        """python-zeroconf's handler (keyword names are fixed): enqueue and return."""
        if name != self.advert.instance_name:
            self._changes.put_nowait((name, state_change))

    async def _dispatch(self) -> None:
        """Collapse queued changes per name and run one worker per name at a time."""
        while True:
            name, change = await self._changes.get()
            self._pending[name] = change  # only the latest change of a name matters
            if name not in self._workers:
                self._workers[name] = asyncio.create_task(self._work(name))

    async def _work(self, name: str) -> None:
        try:
            while name in self._pending:
                change = self._pending.pop(name)
                if change is ServiceStateChange.Removed:
                    self._removed(name)
                else:
                    await self._resolve(name)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug here must not stop discovery of every other peer
            log.exception("discovery worker failed for %s", name)
        finally:
            self._workers.pop(name, None)

    async def _resolve(self, name: str) -> None:
        assert self._zc is not None
        info = AsyncServiceInfo(SERVICE_TYPE, name)
        timeout_ms = self.config.resolve_timeout_ms
        if not await info.async_request(self._zc.zeroconf, timeout_ms, DNSQuestionType.QM):
            self.stats.unresolved += 1
            log_event(log, "discovery.unresolved", logging.DEBUG, service=name)
            return
        try:
            advert = decode_txt(info.properties, name)
        except MalformedAdvert as e:
            self.stats.malformed += 1
            log_event(log, "discovery.malformed", logging.DEBUG, service=name, reason=str(e))
            return
        addresses = tuple(sorted(info.parsed_addresses(IPVersion.V4Only)))
        if not self.advert.same_mesh(advert):
            if name in self._candidates:  # it moved to another mesh: no longer a candidate
                self._emit(DiscoveryEventKind.GOODBYE, self._candidates.pop(name))
            if name not in self._foreign:
                self.stats.foreign_seen += 1
                log_event(log, "discovery.foreign", node=advert.node_id, mesh=advert.mesh_id)
            self._foreign[name] = (advert, addresses)
            if self._on_foreign is not None:
                self._on_foreign(advert, addresses)
            return
        self._foreign.pop(name, None)
        candidate = Candidate(advert, addresses)
        previous = self._candidates.get(name)
        if previous == candidate:
            return
        self._candidates[name] = candidate
        self._emit(
            DiscoveryEventKind.FOUND if previous is None else DiscoveryEventKind.UPDATED, candidate
        )

    def _removed(self, name: str) -> None:
        self._foreign.pop(name, None)
        candidate = self._candidates.pop(name, None)
        if candidate is not None:
            self._emit(DiscoveryEventKind.GOODBYE, candidate)

    def _emit(self, kind: DiscoveryEventKind, candidate: Candidate) -> None:
        if kind is DiscoveryEventKind.FOUND:
            self.stats.found += 1
        elif kind is DiscoveryEventKind.UPDATED:
            self.stats.updated += 1
        else:
            self.stats.goodbyes += 1
        log_event(
            log,
            f"discovery.{kind.value}",
            node=candidate.node_id,
            addresses=list(candidate.addresses),
            mesh_port=candidate.advert.mesh_port,
        )
        try:
            self._events.put_nowait(DiscoveryEvent(kind, candidate, time.monotonic()))
        except asyncio.QueueFull:
            self.stats.dropped_events += 1
