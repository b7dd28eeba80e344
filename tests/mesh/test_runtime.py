"""Capability metadata gossiped by SWIM, the members endpoint and the mesh's metrics."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry, generate_latest

from consensus.errors import ConfigError
from consensus.swim_messages import Meta
from consensus.swim_types import EventKind
from moltmesh.config import MeshConfig, NodeConfig
from moltmesh.mesh.http import MeshRef, add_mesh_routes
from moltmesh.mesh.meta import (
    LOAD_STEP,
    Capability,
    Load,
    MetaRefresher,
    build_meta,
    decode_models,
    encode_models,
    worth_publishing,
)
from moltmesh.mesh.runtime import MeshRuntime
from tests.mesh.swim_cluster import make_states, seeded


def test_models_with_variants_round_trip_and_budget():
    models = {"defects": ("int8", "full"), "tiny": (), "b": ("fp16",)}
    assert decode_models(encode_models(models)) == {
        "b": ("fp16",), "defects": ("full", "int8"), "tiny": ()
    }  # fmt: skip
    cap = Capability("standard", ("CPUExecutionProvider",), False, None,
                     {f"model{i:03d}": ("full", "int8", "fp16") for i in range(100)})  # fmt: skip
    meta = build_meta("127.0.0.1:1", cap, Load(5, 6), {"api": 8470}, budget=512)
    assert 0 < len(meta.models) < 100 and meta.tier == "standard" and meta.ports == (("api", 8470),)


def test_only_meaningful_changes_are_published():
    cap = Capability("light", models={"m": ("full",)})
    base = build_meta("a:1", cap, Load(10, 10))
    assert not worth_publishing(base, build_meta("a:1", cap, Load(10 + LOAD_STEP - 1, 12)))
    assert worth_publishing(base, build_meta("a:1", cap, Load(10 + LOAD_STEP, 10)))
    more = Capability("light", models={"m": ("full", "int8")})
    assert worth_publishing(base, build_meta("a:1", more, Load(10, 10)))

    published: list[Meta] = []
    loads = iter([Load(11, 10), Load(50, 10)])
    refresher = MetaRefresher(
        lambda: build_meta("a:1", cap, next(loads)), published.append, base, 60.0
    )
    assert not refresher.refresh() and refresher.refresh()
    assert [m.cpu_load for m in published] == [50]

    def over_budget(meta: Meta) -> None:
        raise ConfigError("over budget")

    rejecting = MetaRefresher(lambda: build_meta("a:1", more, Load(0, 0)), over_budget, base, 1)
    assert not rejecting.refresh() and rejecting.current is base


async def start_runtime(data_dir: Path, seeds: list[str], cap: dict) -> MeshRuntime:
    config = NodeConfig(
        data_dir=data_dir,
        mesh=MeshConfig(host="127.0.0.1", port=0, swim="local", seeds=seeds, meta_refresh_s=3600),
    )
    runtime = MeshRuntime(config, capability=lambda: cap["value"], api_port=8470)
    await runtime.start()
    return runtime


async def wait_event(queue: asyncio.Queue, kind: EventKind, node: str, seed: int) -> None:  # type: ignore[type-arg]
    try:
        async with asyncio.timeout(30):
            while True:
                event = await queue.get()
                if event.kind is kind and event.node == node:
                    return
    except TimeoutError:
        raise AssertionError(f"no {kind} event for {node} (seed {seed})") from None


async def test_capability_is_gossiped_and_shown(tmp_path: Path):
    seed = seeded()
    states = await make_states(tmp_path, 2)
    cap_a = {
        "value": Capability("light", ("CPUExecutionProvider",), True, 40, {"defects": ("full",)})
    }
    cap_b = {"value": Capability("heavy", ("CPUExecutionProvider",), False, None, {})}
    a = await start_runtime(states[0].data_dir, [], cap_a)
    assert a.driver is not None
    queue = a.driver.subscribe()
    b = await start_runtime(states[1].data_dir, [a.service.address], cap_b)
    try:
        assert b.driver is not None
        b_queue = b.driver.subscribe()
        await wait_event(queue, EventKind.JOINED, b.node_id, seed)
        seen = {m.node: m for m in a.members()}
        assert seen[b.node_id].tier == "heavy" and seen[b.node_id].status == "alive"
        # A node quantizes a model: its new variant reaches the other node.
        cap_a["value"] = Capability("light", ("CPUExecutionProvider",), True, 40,
                                    {"defects": ("full", "int8")})  # fmt: skip
        assert a.refresher is not None and a.refresher.refresh()
        async with asyncio.timeout(30):
            while True:
                seen_b = {m.node: m for m in b.members()}
                if seen_b.get(a.node_id) and seen_b[a.node_id].models == {
                    "defects": ("full", "int8")
                }:
                    break
                await b_queue.get()
        assert seen_b[a.node_id].tier == "light"
        # Battery and execution providers travel too (seen by the other node, not only by self).
        remote_a = seen_b[a.node_id]
        assert (remote_a.battery, remote_a.on_battery) == (40, True)
        assert remote_a.providers == ("CPUExecutionProvider",)
        assert {m.node: m for m in a.members()}[b.node_id].battery == -1  # mains only

        # GET /v1/mesh/members
        ref = MeshRef()
        app = web.Application()
        add_mesh_routes(app, ref)
        async with TestClient(TestServer(app)) as client:
            resp = await client.get("/v1/mesh/members")
            assert resp.status == 503
            ref.runtime = a
            resp = await client.get("/v1/mesh/members")
            doc = await resp.json()
        assert resp.status == 200
        assert (
            doc["node"] == a.node_id and doc["on_battery"] is True and doc["battery_percent"] == 40
        )
        by_node = {m["node"]: m for m in doc["members"]}
        assert by_node[a.node_id]["self"] and by_node[b.node_id]["status"] == "alive"
        assert by_node[a.node_id]["models"] == {"defects": ["full", "int8"]}

        # /metrics figures
        registry = CollectorRegistry()
        registry.register(a.collector())
        text = generate_latest(registry).decode()
        assert 'moltmesh_mesh_members{state="alive"} 2.0' in text
        assert 'moltmesh_mesh_events_total{kind="joined"} 1.0' in text
        assert 'moltmesh_mesh_dropped_frames_total{reason="replay",transport="udp"} 0.0' in text
        assert "moltmesh_mesh_probes_total" in text and "moltmesh_mesh_bytes_total" in text
        assert 'moltmesh_mesh_admin_refused_total{request="KeyOp"} 0.0' in text
    finally:
        for rt in (b, a):
            with contextlib.suppress(Exception):
                await rt.stop()


def test_unusable_swim_preset_is_a_config_error():
    from moltmesh.config import ConfigError as NodeConfigError

    with pytest.raises(NodeConfigError, match=r"mesh\.swim"):
        NodeConfig(mesh=MeshConfig(swim="fast")).validate()
