"""``RaftRuntime``: the node's Raft group member and cluster KV, on top of a running mesh.

    raft = RaftRuntime(node_config, mesh_runtime)
    await raft.start()     # open the log (bootstrap on the `mesh init` node), handlers on the
                           # RAFT and KV channels, driver, follow stream, autopilot
    await raft.kv.put("config/x", b"1")
    await raft.stop()      # a leader hands leadership over first

If the driver fails (a Ready it cannot handle: the disk refused a write), ``failure`` holds the
error, ``status()["failed"]`` says it and ``on_failure(error)`` is called once (``Node`` marks
itself not ready and ``moltmesh node`` exits non-zero so a supervisor restarts it).

Only the node holding the mesh CA key (the one that ran ``moltmesh mesh init``) founds the group,
and only when its Raft directory is empty and it knows no peer yet (a CA holder that meets peers
first founds a group only if every live peer answers that it knows none: a CA key imported onto
another node never founds a second group); every other node starts empty and is added by the
leader's autopilot (or follows by watch stream).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from consensus.raft import RaftConfig
from consensus.raft_types import Role
from moltmesh.config import NodeConfig
from moltmesh.logs import log_event
from moltmesh.mesh.runtime import MeshRuntime
from moltmesh.mesh.wire import Channel
from moltmesh.raft.autopilot import Autopilot, MemberHealth
from moltmesh.raft.driver import FSYNC_BUCKETS, RaftDriver
from moltmesh.raft.kvservice import ClusterKv
from moltmesh.raft.meshsync import MeshSync
from moltmesh.raft.tasks import cancel_and_wait
from moltmesh.raft.transport import MeshTransport
from moltmesh.raft.wal import DiskStorage

log = logging.getLogger("moltmesh.raft.runtime")

TIMINGS = {"lan": RaftConfig.lan, "local": RaftConfig.local, "wan": RaftConfig.wan}

MSG_FRACTION_OF_FRAME = 4
"""A Raft message (an append's entries, a snapshot chunk) is at most this fraction of a mesh
frame: a batch of several messages, the envelope and msgpack framing fit around it."""


def raft_config(timing: str, max_frame_bytes: int) -> RaftConfig:
    """The ``timing`` preset with ``max_bytes_per_msg`` capped at a quarter of the mesh's
    frame limit, so no Raft message is too large to send (a snapshot goes in chunks of that
    size)."""
    rc = TIMINGS[timing]()
    cap = max(1024, max_frame_bytes // MSG_FRACTION_OF_FRAME)
    if rc.max_bytes_per_msg > cap:
        rc = dataclasses.replace(rc, max_bytes_per_msg=cap)
    return rc.validate()


class RaftRuntime:
    """See the module docstring."""

    def __init__(self, config: NodeConfig, mesh: MeshRuntime) -> None:
        self.config = config
        self.mesh = mesh
        rc = config.raft
        self.storage = DiskStorage.open(config.data_dir / "raft", fsync=rc.fsync)
        service = mesh.service
        frame = config.mesh.max_frame_bytes
        self.transport = MeshTransport(service.streams, service.peers)
        self.driver = RaftDriver(
            service.node_id, self.storage, raft_config(rc.timing, frame),
            lambda dst, msgs: self.kv.send_raft(dst, msgs),
            snapshot_entries=rc.snapshot_entries,
        )  # fmt: skip
        self.kv = ClusterKv(
            self.driver, self.transport.send, lambda: list(service.peers()), rc.request_timeout_s,
            max_frame_bytes=frame,
        )  # fmt: skip
        self.driver.on_failure = self._driver_failed
        self.on_failure: Callable[[BaseException], None] | None = None
        """Called once, on the loop, with the error that stopped the driver."""
        self._boot_task: asyncio.Task[None] | None = None
        self.meshsync = MeshSync(self.kv, service, config.mesh.swim)
        self.autopilot = Autopilot(
            self.driver, self._health, max_voters=rc.max_voters, max_learners=rc.max_learners,
            stabilization_s=rc.stabilization_s,
        )  # fmt: skip

    @property
    def failure(self) -> BaseException | None:
        """The error that stopped the Raft driver for good, or None while it runs."""
        return self.driver.failure

    def _driver_failed(self, error: BaseException) -> None:
        if self.on_failure is not None:
            self.on_failure(error)

    def _health(self) -> list[MemberHealth]:
        return [MemberHealth(m.node, m.status, m.tier, m.age_s) for m in self.mesh.members()]

    def attach(self) -> None:
        """Take the RAFT and KV channels of the mesh's streams. Called before the mesh starts
        accepting (``Node`` does), no frame a peer sends this node early (a leader's appends
        to a restarted follower) is dropped for want of a handler: it is stepped into the core,
        which the driver runs once started. Idempotent; ``start`` calls it too."""
        handlers = self.mesh.service.streams.handlers
        handlers[Channel.RAFT] = self.kv.on_raft
        handlers[Channel.KV] = self.kv.on_kv

    async def start(self) -> None:
        self.attach()
        service = self.mesh.service
        members_doc = service.members_document

        def with_raft() -> bytes:  # `moltmesh status --json` shows the Raft view too
            doc = json.loads(members_doc())
            doc["raft"] = self.status()
            return json.dumps(doc).encode()

        if members_doc is not None:
            service.members_document = with_raft
        await self.driver.start()
        if service.state.ca_key is not None and self.driver.is_empty():
            if not service.peers():
                self.driver.bootstrap()  # `mesh init` just ran here: found the group
            else:
                self._boot_task = asyncio.create_task(self._bootstrap_if_no_group())
        self.kv.start()
        self.autopilot.start()
        self.meshsync.start()
        log_event(log, "raft.started", node=self.driver.node_id, **_brief(self.driver.status()))

    async def _bootstrap_if_no_group(self) -> None:
        """A CA holder with no Raft state among live peers (the CA key was imported here, or
        the mesh predates Raft): found a group only when every peer answers that it knows
        none; otherwise wait to be added by the group's leader."""
        from moltmesh.raft.proto import KvOp, KvRequest, KvStatus

        while not self.driver.is_member() and self.driver.node.leader_id is None:
            peers = sorted(self.mesh.service.peers())
            answers = []
            for p in peers:
                with contextlib.suppress(TimeoutError):
                    req = KvRequest(0, KvOp.READ, linearizable=False, timeout_ms=1000)
                    answers.append(await self.kv.call(p, req, 1.0))
            if any(a.status is KvStatus.OK or a.members or a.leader for a in answers):
                return  # a group exists: the autopilot adds us
            if peers and len(answers) == len(peers):
                self.driver.bootstrap()
                return
            await asyncio.sleep(2.0)

    async def stop(self, handover_s: float = 2.0) -> None:
        """Hand leadership to another voter first (graceful leave), then stop."""
        await cancel_and_wait(self._boot_task)
        d = self.driver
        await self.autopilot.stop()
        await self.meshsync.stop()
        others = [v for v in d.node.voters if v != d.node_id]
        if d.node.role is Role.LEADER and others:
            with contextlib.suppress(Exception):
                d.transfer_leadership(others[0])
                async with asyncio.timeout(handover_s):
                    while d.node.role is Role.LEADER:
                        await d.applied_event().wait()
        await self.kv.stop()
        await d.stop()
        await self.transport.close()
        handlers = self.mesh.service.streams.handlers
        handlers.pop(Channel.RAFT, None)
        handlers.pop(Channel.KV, None)

    def status(self) -> dict[str, object]:
        return {**self.driver.status(), "autopilot_changes": self.autopilot.changes}

    def collector(self) -> Collector:
        return _RaftCollector(self)


def _brief(status: dict[str, object]) -> dict[str, object]:
    return {k: status[k] for k in ("role", "term", "commit_index", "voters")}


class _RaftCollector(Collector):
    def __init__(self, rt: RaftRuntime) -> None:
        self.rt = rt

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily | HistogramMetricFamily]:
        d = self.rt.driver
        n = d.node
        for name, doc, value in (
            ("moltmesh_raft_term", "Current Raft term.", n.term),
            ("moltmesh_raft_commit_index", "Highest log index known committed.", n.commit_index),
            ("moltmesh_raft_apply_index", "Highest log index applied to the KV.", n.applied_index),
            ("moltmesh_raft_is_leader", "1 when this node leads the group.",
             int(n.role is Role.LEADER)),
            ("moltmesh_raft_voters", "Voters in the group (this node's view).", len(n.voters)),
            ("moltmesh_raft_learners", "Learners in the group.", len(n.learners)),
            ("moltmesh_raft_driver_failed",
             "1 when the Raft driver stopped on an error (the node must be restarted).",
             int(d.failure is not None)),
        ):  # fmt: skip
            g = GaugeMetricFamily(name, doc)
            g.add_metric([], value)
            yield g
        s = d.stats
        for name, doc, value in (
            ("moltmesh_raft_proposals", "Proposals made on this node (as leader).", s.proposals),
            ("moltmesh_raft_proposal_entries",
             "Log entries this node's proposals went into (a batch entry holds several).",
             s.proposal_entries),
            ("moltmesh_raft_proposals_failed", "Proposals lost or timed out.",
             s.proposals_failed),
            ("moltmesh_raft_reads", "Linearizable (ReadIndex) reads started here.", s.reads),
            ("moltmesh_raft_snapshots", "KV snapshots taken (log compactions).",
             d.compactor.taken),
            ("moltmesh_raft_wal_roll_failures",
             "Log segments that could not be started (written on in the old one).",
             d.storage.roll_failures),
        ):  # fmt: skip
            c = CounterMetricFamily(name, doc)
            c.add_metric([], value)
            yield c
        yield from self._transfer()
        h = HistogramMetricFamily(
            "moltmesh_raft_fsync_seconds", "Latency of one fsync of the Raft log (per Ready)."
        )
        buckets = [(str(b), float(v)) for b, v in zip(FSYNC_BUCKETS, s.fsync_buckets, strict=True)]
        buckets.append(("+Inf", float(s.fsync_count)))
        h.add_metric([], buckets, s.fsync_sum)
        yield h

    def _transfer(self) -> Iterator[CounterMetricFamily]:
        """Snapshots and messages sent in pieces: InstallSnapshot (``raft``) and the follow
        stream (``follow``), snapshots refused when restoring, frames too large to send."""
        rt = self.rt
        f, rx = rt.kv.stats, rt.driver.node.snapshot_receiver
        c = CounterMetricFamily("moltmesh_raft_transfer_chunks",
                                "Snapshot chunks received by the follow stream.")  # fmt: skip
        c.add_metric([], f.snapshot_chunks)
        yield c
        c = CounterMetricFamily("moltmesh_raft_transfer_snapshots_installed",
                                "Snapshots installed whole and checked, by path.",
                                labels=["path"])  # fmt: skip
        c.add_metric(["raft"], rx.installed)
        c.add_metric(["follow"], f.snapshots_installed)
        yield c
        c = CounterMetricFamily("moltmesh_raft_transfer_snapshots_refused",
                                "Snapshots refused (cut short, too long, corrupt, not sealed, "
                                "or not restorable), by path.", labels=["path"])  # fmt: skip
        c.add_metric(["raft"], rx.refused)
        c.add_metric(["follow"], f.snapshots_refused)
        c.add_metric(["restore"], rt.driver.stats.snapshots_refused)
        yield c
        c = CounterMetricFamily("moltmesh_raft_transfer_oversize_dropped",
                                "Bodies too large for a mesh frame, not sent, by where caught.",
                                labels=["where"])  # fmt: skip
        c.add_metric(["kv"], f.oversize_dropped)
        c.add_metric(["transport"], rt.transport.oversize)
        yield c
        c = CounterMetricFamily(
            "moltmesh_raft_kv_busy_refused",
            "KV requests of a peer refused: it had too many in flight here.",
        )
        c.add_metric([], f.busy_refused)
        yield c
        c = CounterMetricFamily(
            "moltmesh_raft_transfer_raft_batches",
            "RAFT envelopes sent (a Ready's messages split to fit frames).",
        )
        c.add_metric([], f.raft_batches)
        yield c
