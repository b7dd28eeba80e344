"""Shared helpers of the mesh tests: meshes in temporary directories, real loopback sockets."""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

from moltmesh.config import MeshConfig
from moltmesh.identity import load_or_create_identity
from moltmesh.mesh import ca, store
from moltmesh.mesh.drops import DropCounters
from moltmesh.mesh.join import JoinService, join
from moltmesh.mesh.store import MeshState
from moltmesh.mesh.streams import MeshStreams, Peer
from moltmesh.mesh.wire import Channel, Envelope

LIFETIME = dt.timedelta(days=30)
BACKDATE = dt.timedelta(hours=1)


def mesh_config(**kw: object) -> MeshConfig:
    """Short timeouts so a refused stream fails fast (they never gate an assertion)."""
    cfg = MeshConfig(connect_timeout_s=5.0, request_timeout_s=5.0, idle_timeout_s=30.0)
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


def init_holder(data_dir: Path) -> MeshState:
    identity = load_or_create_identity(data_dir)
    return store.init_mesh(data_dir, identity, LIFETIME, BACKDATE, ca.utcnow())


@dataclass
class Echo:
    """A stream handler that records what it got and echoes it back."""

    got: list[tuple[str, bytes]] = field(default_factory=list)
    event: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, peer: Peer, env: Envelope) -> bytes:
        self.got.append((peer.node_id, env.body))
        self.event.set()
        return b"echo:" + env.body


@dataclass
class Member:
    state: MeshState
    streams: MeshStreams
    drops: DropCounters
    echo: Echo
    address: str

    @property
    def node_id(self) -> str:
        return self.state.node_id


async def serve(state: MeshState, config: MeshConfig | None = None) -> Member:
    """Start the mesh streams of ``state`` on 127.0.0.1 with an echo handler on INFER."""
    config = config or mesh_config()
    drops = DropCounters()
    echo = Echo()
    joiner = JoinService(state, config, drops).handle if state.ca_key is not None else None
    streams = MeshStreams(state, config, drops, {Channel.INFER: echo}, joiner)
    host, port = await streams.start("127.0.0.1", 0)
    return Member(state, streams, drops, echo, f"{host}:{port}")


async def join_member(holder: Member, data_dir: Path, ttl_s: float = 600.0) -> MeshState:
    """A new node joins ``holder``'s mesh with a fresh token (the real join protocol)."""
    import time

    token = holder.state.tokens().create(
        holder.state.ca_fingerprint, holder.address, ttl_s, time.time()
    )
    identity = load_or_create_identity(data_dir)
    return await join(token, identity, data_dir, mesh_config())
