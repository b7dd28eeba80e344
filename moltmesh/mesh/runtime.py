"""``MeshRuntime``: everything a node runs for the mesh, started and stopped as one.

    runtime = MeshRuntime(config, models=lambda: {"defects": ("full", "int8")}, api_port=8470)
    await runtime.start()      # MeshService (TLS streams, sealed gossip, admission, admin),
                               # SWIM driver, metadata refresher, known-members file
    runtime.members()          # list of MemberInfo (self included)
    async for event in runtime.driver.events(): ...
    await runtime.stop()       # graceful leave, then sockets closed

SWIM's seeds are ``config.mesh.seeds``, then the CA holder's address stored at join, then the
members last seen alive (``known_members``): a node restarted without seeds and without mDNS
finds its mesh again.

``collector()`` is a prometheus collector of the mesh's figures for the node's registry:
members by state, probes sent, events by kind, bytes in and out, dropped frames by reason.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from consensus.swim_messages import MemberStatus, Meta
from consensus.swim_types import MemberView
from moltmesh.config import NodeConfig
from moltmesh.mesh import known_members
from moltmesh.mesh.drops import DropCounters
from moltmesh.mesh.known_members import KnownMembers
from moltmesh.mesh.meta import Capability, MetaRefresher, build_meta, decode_models, read_load
from moltmesh.mesh.service import MeshService
from moltmesh.mesh.swim_driver import PRESETS, SwimDriver

log = logging.getLogger("moltmesh.mesh.runtime")


def local_capability(models: Callable[[], dict[str, tuple[str, ...]]]) -> Capability:
    """This device's capability: tier from ``moltmesh.capability``, onnxruntime providers."""
    import onnxruntime

    from moltmesh import capability
    from moltmesh.mesh.meta import read_battery

    providers = tuple(onnxruntime.get_available_providers())
    discharging, percent = read_battery()
    return Capability(
        tier=capability.local_tier(list(providers)), providers=providers,
        on_battery=discharging, battery_percent=percent, models=models(),
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class MemberInfo:
    """One member as shown by ``GET /v1/mesh/members`` and ``moltmesh status``."""

    node: str
    status: str
    address: str
    tier: str
    cpu_load: int
    mem_load: int
    models: dict[str, tuple[str, ...]]
    incarnation: int
    age_s: float  # seconds since its status last changed, as seen here
    self: bool
    battery: int  # percent; -1 on mains power only
    on_battery: bool
    providers: tuple[str, ...]

    def to_json(self) -> dict[str, object]:
        out = asdict(self)
        out["models"] = {k: list(v) for k, v in self.models.items()}
        return out


class MeshRuntime:
    """Service + SWIM driver + metadata refresher for one node (one event loop)."""

    def __init__(
        self,
        config: NodeConfig,
        models: Callable[[], dict[str, tuple[str, ...]]] = dict,
        api_port: int | None = None,
        capability: Callable[[], Capability] | None = None,
        drops: DropCounters | None = None,
    ) -> None:
        self.config = config
        self._models = models
        self._capability = capability or (lambda: local_capability(self._models))
        self._ports = {"api": api_port} if api_port else {}
        self.service = MeshService(config.data_dir, config.mesh, drops)
        self.driver: SwimDriver | None = None
        self.refresher: MetaRefresher | None = None
        self.known: KnownMembers | None = None
        self._cap: Capability | None = None

    @property
    def node_id(self) -> str:
        return self.service.node_id

    def _meta(self) -> Meta:
        self._cap = self._capability()
        swim = PRESETS[self.config.mesh.swim]()
        return build_meta(self.service.address, self._cap, read_load(), self._ports,
                          budget=swim.meta_budget)  # fmt: skip

    async def start(self) -> None:
        await self.service.start()
        try:
            meta = self._meta()
            state = self.service.state
            seeds = known_members.startup_seeds(
                list(self.config.mesh.seeds), state.ca_address, state.dir
            )
            self.driver = SwimDriver(
                self.service, PRESETS[self.config.mesh.swim](), meta, seeds,
                leave_timeout_s=self.config.mesh.leave_timeout_s,
            )  # fmt: skip
            await self.driver.start()
            self.known = KnownMembers(state.dir, self.driver, lambda: self.node_id)
            self.known.start()
            self.service.members_document = self._members_json
            self.service.set_peer_source(self._live_peers)
            self.refresher = MetaRefresher(
                self._meta, self.driver.set_meta, meta, self.config.mesh.meta_refresh_s
            )
            self.refresher.start()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        if self.known is not None:
            await self.known.stop()
        if self.refresher is not None:
            await self.refresher.stop()
        if self.driver is not None:
            await self.driver.stop()
        await self.service.stop()

    def _live_peers(self) -> dict[str, str]:
        """Alive and suspected members by node id -> address: where admin changes are relayed."""
        live = (MemberStatus.ALIVE, MemberStatus.SUSPECT)
        members = self.driver.members() if self.driver is not None else []
        return {m.node: m.meta.address for m in members if m.status in live and m.meta.address}

    def _members_json(self) -> bytes:
        from moltmesh.mesh.http import members_document

        return json.dumps(members_document(self)).encode()

    def capability(self) -> Capability | None:
        """This node's capability as last read (battery and providers included)."""
        return self._cap

    def members(self) -> list[MemberInfo]:
        if self.driver is None:
            return []
        now = self.driver.clock()
        return [self._info(m, now) for m in self.driver.members()]

    def _info(self, m: MemberView, now: int) -> MemberInfo:
        meta = m.meta
        age = round(max(0, now - m.since) / 1e6, 1)
        return MemberInfo(
            m.node, m.status.name.lower(), meta.address, meta.tier, meta.cpu_load, meta.mem_load,
            decode_models(meta.models), m.incarnation, age, m.node == self.node_id,
            meta.battery, meta.on_battery, meta.providers,
        )  # fmt: skip

    def collector(self) -> Collector:
        return _MeshCollector(self)


class _MeshCollector(Collector):
    def __init__(self, runtime: MeshRuntime) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        rt = self.runtime
        members = GaugeMetricFamily(
            "moltmesh_mesh_members", "Members known to this node, by state.", labels=["state"]
        )
        counts = {s.name.lower(): 0 for s in MemberStatus}
        for m in rt.members():
            counts[m.status] += 1
        for state, n in sorted(counts.items()):
            members.add_metric([state], n)
        yield members
        driver = rt.driver
        probes = CounterMetricFamily("moltmesh_mesh_probes", "SWIM probes (pings) sent.")
        probes.add_metric([], driver.probes_sent if driver else 0)
        yield probes
        sent = CounterMetricFamily(
            "moltmesh_mesh_messages_sent", "SWIM messages sent, by type.", labels=["type"]
        )
        events = CounterMetricFamily(
            "moltmesh_mesh_events",
            "Membership events seen here, by kind (suspected = suspicions).",
            labels=["kind"],
        )
        if driver is not None:
            for name, n in sorted(driver.sent.items()):
                sent.add_metric([name], n)
            for kind in ("joined", "updated", "suspected", "alive", "dead", "left"):
                events.add_metric([kind], driver.events_seen.get(kind, 0))
        yield sent
        yield events
        yield rt.service.refusals_family()
        health = GaugeMetricFamily("moltmesh_mesh_health_score", "Lifeguard local health score.")
        health.add_metric([], driver.core.health_score if driver and driver.core else 0)
        yield health
        traffic = CounterMetricFamily(
            "moltmesh_mesh_bytes", "Mesh bytes by direction and transport (UDP: sealed datagrams; "
            "TCP: frames inside TLS).", labels=["direction", "transport"],
        )  # fmt: skip
        gossip = rt.service.gossip
        streams = rt.service.streams
        traffic.add_metric(["in", "udp"], gossip.stats.bytes_in if gossip else 0)
        traffic.add_metric(["out", "udp"], gossip.stats.bytes_out if gossip else 0)
        traffic.add_metric(["in", "tcp"], streams.bytes_in)
        traffic.add_metric(["out", "tcp"], streams.bytes_out)
        yield traffic
        yield from rt.service.drops.collector().collect()
