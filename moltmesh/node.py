"""``moltmesh.Node``: the public object that runs a node, embedded or behind the CLI.

    async with Node(config) as node:
        result = await node.infer("defects", {"image": batch})

``start`` (or entering the context) takes the data directory's lock (``moltmesh.dirlock``: a
second node on the same directory is refused with ``DataDirBusy``; the lock is held until
``stop`` ends), creates the directory and identity, loads the models,
unless ``serve_api=False`` serves the HTTP API, and — when the data directory holds mesh
credentials (``moltmesh mesh init`` or a join token) — runs the mesh: TLS streams, sealed gossip,
SWIM membership (``members()``, ``events()``) and mDNS discovery. ``stop`` leaves the mesh
gracefully, stops taking requests, lets in-flight ones finish (up to ``api.shutdown_grace_s``)
and releases everything. One Node runs on one event loop; its methods are not thread-safe.

A part the node cannot run without may fail while it runs: today the Raft driver (a Ready it
could not handle, e.g. the disk refused a write; nothing acknowledged is lost). The node then
stays up but is no longer ready: ``failure`` holds a ``NodeFailed`` (its ``__cause__`` the
error), ``ready`` is False and ``not_ready_reason`` says why, the inference service stops taking
requests (``/v2/health/ready`` answers 503), ``/v1/raft/status`` shows ``"failed"``, the event
``node.failed`` is logged at error level and ``await node.wait_failed()`` returns. The remedy is
a restart: ``moltmesh node`` stops cleanly and exits with ``EXIT_FAILED`` so that a supervisor
(systemd ``Restart=on-failure``) restarts it; an embedding app should do the same.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime
from aiohttp import web

from moltmesh import capability
from moltmesh.api import ServerLog, build_app
from moltmesh.api_listener import ApiListener, runner_options
from moltmesh.config import ConfigError, NodeConfig
from moltmesh.dirlock import DataDirLock
from moltmesh.errors import BadRequest
from moltmesh.identity import (
    API_URL_FILE,
    Identity,
    load_or_create_api_token,
    load_or_create_identity,
    write_private,
)
from moltmesh.inference import InferenceService, InferResult
from moltmesh.logs import log_event
from moltmesh.mesh.http import MeshRef, add_mesh_routes
from moltmesh.metrics import NodeMetrics
from moltmesh.raft.compaction import settle_gc
from moltmesh.raft.http import RaftRef, add_raft_routes
from runtimes.repository import ModelRepository

if TYPE_CHECKING:
    from prometheus_client.registry import Collector

    from consensus.swim_types import SwimEvent
    from moltmesh.mesh.discovered import DiscoveredPeers
    from moltmesh.mesh.runtime import MemberInfo, MeshRuntime
    from moltmesh.raft.kvservice import ClusterKv
    from moltmesh.raft.runtime import RaftRuntime

log = logging.getLogger("moltmesh.node")


NOFILE_FALLBACKS = (2**20, 10240)
"""Soft limits tried when the hard RLIMIT_NOFILE is unlimited: Linux's default ``nr_open``,
macOS's ``OPEN_MAX``."""


def raise_open_files_limit() -> int | None:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit and return the soft limit in
    force afterwards (``None`` where the platform has no ``resource`` module). Never lowers it;
    a refusal leaves it as it was. A node holds a descriptor per mesh connection, API client,
    log segment and model file: the common soft default of 1024 runs out under load or a flood
    of connections long before the hard limit (review9 H2)."""
    try:
        import resource
    except ImportError:  # not a Unix
        return None
    nofile, infinity = resource.RLIMIT_NOFILE, resource.RLIM_INFINITY
    soft, hard = resource.getrlimit(nofile)
    if soft == infinity or (hard != infinity and soft >= hard):
        return soft
    for target in (hard, *NOFILE_FALLBACKS) if hard == infinity else (hard,):
        if target == infinity or target > soft:
            try:
                resource.setrlimit(nofile, (target, hard))
                break
            except (ValueError, OSError):
                continue
    return resource.getrlimit(nofile)[0]


def _soft_nofile() -> int | None:
    try:
        import resource
    except ImportError:
        return None
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class NodeFailed(RuntimeError):
    """A part the node cannot run without stopped for good (``component``: ``"raft"``); the
    original error is the ``__cause__``. The node must be restarted."""

    def __init__(self, component: str, error: BaseException) -> None:
        super().__init__(f"{component} failed: {error!r}")
        self.component = component
        self.__cause__ = error


LOOPBACK = ("127.0.0.1", "::1", "localhost")
BUNDLED_MODELS = Path(__file__).resolve().parent / "bundled" / "models"


class Node:
    """One moltmesh node. See the module docstring for the lifecycle."""

    def __init__(self, config: NodeConfig | None = None, *, serve_api: bool | None = None) -> None:
        self.config = config or NodeConfig()
        self.config.validate()
        self._serve_api = self.config.api.enabled if serve_api is None else serve_api
        self.metrics = NodeMetrics()
        self._identity: Identity | None = None
        self._service: InferenceService | None = None
        self._runner: web.AppRunner | None = None
        self._listener: ApiListener | None = None
        self.mesh_ref = MeshRef()  # the API's view of the mesh; ``runtime`` set while it runs
        self._collectors: list[Collector] = []  # mesh, discovery and Raft figures, registered
        self._discovered: DiscoveredPeers | None = None
        self.raft_ref = RaftRef()  # the API's view of Raft/KV; ``runtime`` set while it runs
        self.api_url: str | None = None
        self.api_token: str | None = None
        self.token_created = False
        self._lock = DataDirLock(self.config.data_dir, "moltmesh node")
        self._failure: NodeFailed | None = None
        self._failed = asyncio.Event()  # set once ``_failure`` is

    @property
    def node_id(self) -> str:
        if self._identity is None:
            raise RuntimeError("node not started")
        return self._identity.node_id

    @property
    def service(self) -> InferenceService:
        if self._service is None:
            raise RuntimeError("node not started")
        return self._service

    @property
    def failure(self) -> NodeFailed | None:
        """Why the node must be restarted (see the module docstring), or None."""
        return self._failure

    @property
    def ready(self) -> bool:
        """Whether the node takes requests: started, not stopping, nothing failed."""
        return self._failure is None and self._service is not None and self._service.ready

    @property
    def not_ready_reason(self) -> str | None:
        """Why ``ready`` is False (None when ready): what ``/v2/health/ready`` should say."""
        if self._failure is not None:
            return f"{self._failure}; restart the node"
        if self._service is None or not self._service.ready:
            return "starting or stopping"
        return None

    async def wait_failed(self) -> NodeFailed:
        """Wait until a part the node cannot run without fails; returns ``failure``."""
        await self._failed.wait()
        assert self._failure is not None
        return self._failure

    def _part_failed(self, component: str, error: BaseException) -> None:
        """``component`` stopped for good: not ready from now on (see the module docstring)."""
        if self._failure is not None:
            return
        self._failure = NodeFailed(component, error)
        if self._service is not None:
            self._service.stop_accepting()  # /v2/health/ready: 503
        log_event(log, "node.failed", node=self._identity.node_id if self._identity else None,
                  component=component, error=repr(error), errno=getattr(error, "errno", None),
                  hint="not ready from now on: restart the node", level=logging.ERROR)  # fmt: skip
        self._failed.set()

    async def __aenter__(self) -> Node:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def model_roots(self) -> list[Path]:
        """Repository roots in priority order: the user's, then the bundled models."""
        roots = list(self.config.runtime.model_repository)
        if self.config.runtime.bundled_models:
            roots.append(BUNDLED_MODELS)
        return roots

    async def start(self) -> None:
        """Start everything (see the module docstring). On failure, what started is stopped
        and the data directory's lock released before the error propagates."""
        started = time.perf_counter()
        before = _soft_nofile()
        open_files = raise_open_files_limit()
        data_dir = self.config.data_dir
        self._lock.acquire()
        try:
            self._identity = load_or_create_identity(data_dir)
            self.api_token, self.token_created = load_or_create_api_token(data_dir)
            providers = list(onnxruntime.get_available_providers())
            tier = capability.local_tier(providers)
            self._service = InferenceService(
                ModelRepository(self.model_roots()),
                self.config.runtime,
                self.metrics,
                self.node_id,
                tier=tier,
                on_battery=capability.on_battery(),
            )
            await self._service.start()
            if self._serve_api:
                await self._start_api()
            await self._start_mesh()
        except BaseException:
            await self.stop()
            raise
        settle_gc(full=True)  # what start built lives on: full collections skip it
        log_event(
            log, "node.started", node=self.node_id, name=self.config.name or None, tier=tier,
            models=self._service.model_names(), api=self.api_url,
            startup_ms=round((time.perf_counter() - started) * 1000, 1),
            open_files_limit=open_files, open_files_limit_was=before,
        )  # fmt: skip

    async def _start_api(self) -> None:
        api = self.config.api
        app = build_app(self.service, self.metrics, self.api_token or "", api.max_body_bytes,
                        readiness=lambda: self.not_ready_reason,
                        body_limits=(api.body_timeout_s, api.min_body_rate))  # fmt: skip
        self._runner = web.AppRunner(
            app, shutdown_timeout=api.shutdown_grace_s, access_log=None, handler_cancellation=True,
            logger=ServerLog(self.metrics), **runner_options(api.idle_timeout_s),
        )  # fmt: skip
        add_mesh_routes(app, self.mesh_ref)
        add_raft_routes(app, self.raft_ref)
        await self._runner.setup()
        ssl_context = None
        if api.tls_cert and api.tls_key:
            ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            try:
                ssl_context.load_cert_chain(api.tls_cert, api.tls_key)
            except ssl.SSLError as e:
                raise ConfigError(
                    f"api.tls_cert {api.tls_cert} / api.tls_key {api.tls_key}: not a usable "
                    f"PEM certificate and matching private key ({e.reason or e})"
                ) from None
        self._listener = ApiListener(  # slow and idle clients are bounded
            self._runner, max_connections=api.max_connections,
            handshake_timeout_s=api.idle_timeout_s,
        )  # fmt: skip
        try:
            host, port = await self._listener.start(api.host, api.port, ssl_context)
        except OSError as e:
            raise OSError(
                e.errno,
                f"cannot serve the API on api.host {api.host!r}, api.port {api.port}: "
                f"{e.strerror or e}",
            ) from None
        scheme = "https" if ssl_context else "http"
        shown = f"[{host}]" if ":" in host else host
        self.api_url = f"{scheme}://{shown}:{port}"
        write_private(self.config.data_dir / API_URL_FILE, (self.api_url + "\n").encode())

    async def _start_mesh(self) -> None:
        from moltmesh.mesh import store

        if not store.has_mesh(self.config.data_dir):
            log_event(log, "mesh.absent", hint="run `moltmesh mesh init` or start with --token")
            return
        from moltmesh.mesh.runtime import MeshRuntime

        port = int(self.api_url.rsplit(":", 1)[1]) if self.api_url else None
        runtime = MeshRuntime(self.config, models=self._served_models, api_port=port)
        raft = None
        if self.config.raft.enabled:
            from moltmesh.raft.runtime import RaftRuntime

            self.raft_ref.state = "starting"  # the KV says so until Raft runs
            raft = RaftRuntime(self.config, runtime)
            raft.on_failure = lambda error: self._part_failed("raft", error)
            raft.attach()  # before the streams accept: a peer's Raft frame always finds it
        try:
            await runtime.start()
        except BaseException:
            if raft is not None:
                await raft.stop()
            raise
        self.mesh_ref.runtime = runtime
        self._register(runtime.collector())
        if self.config.discovery.enabled and runtime.driver is not None:
            from moltmesh.mesh.discovered import DiscoveredPeers, advert_for

            state = runtime.service.state
            public_api = port if port and self.config.api.host not in LOOPBACK else None
            advert = advert_for(state.node_id, state.mesh_id, state.ca_fingerprint,
                                runtime.service.address, public_api)  # fmt: skip
            self._discovered = DiscoveredPeers(advert, self.config.discovery, runtime.driver)
            await self._discovered.start()
            self._register(self._discovered.collector())
        if raft is not None:
            await self._start_raft(raft)

    def _register(self, collector: Collector) -> None:
        """Put ``collector`` on /metrics now; ``stop`` takes off exactly what was put on."""
        self.metrics.registry.register(collector)
        self._collectors.append(collector)

    async def _start_raft(self, raft: RaftRuntime) -> None:
        """Raft and the cluster KV over the running mesh (``node.kv``)."""
        try:
            await raft.start()
        except BaseException:
            await raft.stop()
            raise
        self.raft_ref.runtime = raft
        self._register(raft.collector())

    @property
    def kv(self) -> ClusterKv:
        """The cluster KV (get/put/delete/cas/list/watch); RuntimeError outside a mesh."""
        if self.raft_ref.runtime is None:
            raise RuntimeError("the cluster KV runs only when this node is part of a mesh")
        return self.raft_ref.runtime.kv

    def _served_models(self) -> dict[str, tuple[str, ...]]:
        """Models served here, with the variants present for each one's newest version."""
        service = self.service
        return {
            name: tuple(service.entry(name).variants.get(service.entry(name).latest, ()))
            for name in service.model_names()
        }

    @property
    def mesh(self) -> MeshRuntime | None:
        """The running mesh, or None when this node runs alone."""
        return self.mesh_ref.runtime

    def members(self) -> list[MemberInfo]:
        """The mesh's members as this node sees them (itself included); [] when alone."""
        return self.mesh.members() if self.mesh is not None else []

    async def events(self) -> AsyncIterator[SwimEvent]:
        """Membership events (joined, updated, suspected, alive, dead, left) as they happen.

        Each call is an independent subscription from now on; it ends when the mesh stops.
        Raises RuntimeError when the node is not part of a mesh.
        """
        if self.mesh is None or self.mesh.driver is None:
            raise RuntimeError("this node is not part of a mesh")
        async for event in self.mesh.driver.events():
            yield event

    async def stop(self) -> None:
        """Leave the mesh, stop taking work, let in-flight requests finish, release everything."""
        for collector in self._collectors:
            self.metrics.registry.unregister(collector)
        self._collectors.clear()
        raft = self.raft_ref.runtime
        if raft is not None:
            self.raft_ref.runtime, self.raft_ref.state = None, "stopping"
            await raft.stop()
        if self._discovered is not None:
            await self._discovered.stop()  # the goodbye goes out before we leave SWIM
            self._discovered = None
        mesh = self.mesh_ref.runtime
        if mesh is not None:
            self.mesh_ref.runtime = None
            await mesh.stop()
        if self._service is not None:
            self._service.stop_accepting()  # health says 503 and new requests are refused
        if self._listener is not None:
            self._listener.close()  # no new connections; the runner closes the others
            self._listener = None
        if self._runner is not None:
            await self._runner.cleanup()  # closes the connections, waits for in-flight handlers
            self._runner = None
        if self._service is not None:
            await self._service.close(self.config.api.shutdown_grace_s)
        if self._lock.held and self.api_url is not None:  # ours: written under the lock
            (self.config.data_dir / API_URL_FILE).unlink(missing_ok=True)
        if self._lock.held:
            log_event(log, "node.stopped", node=self._identity.node_id if self._identity else None)
        self._lock.release()

    async def infer(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray] | np.ndarray,
        *,
        version: str | None = None,
        outputs: Sequence[str] | None = None,
        urgency: float = 0.0,
        deadline: float | None = None,
    ) -> InferResult:
        """Answer one inference request.

        ``inputs`` maps input names to arrays (a bare array is accepted for single-input models);
        ``urgency`` is 0..1, checked (this node answers every request itself: route "local");
        ``deadline`` is the time budget in seconds (None = the configured default). Raises the
        errors of ``InferenceService.infer``.
        """
        if not 0.0 <= urgency <= 1.0:
            raise BadRequest("urgency must be from 0 to 1")
        if isinstance(inputs, np.ndarray):
            specs = self.service.metadata(model, version).inputs
            if len(specs) != 1:
                raise BadRequest(f"model {model!r} has {len(specs)} inputs; pass a mapping")
            inputs = {specs[0].name: inputs}
        absolute = None if deadline is None else time.monotonic() + deadline
        return await self.service.infer(
            model, inputs, version=version, outputs=outputs, deadline=absolute
        )
