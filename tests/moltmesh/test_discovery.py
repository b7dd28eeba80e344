"""Discovery on loopback: TXT codec, interface choice, and live register/browse/goodbye.

Live tests announce on 127.0.0.1 only (the default), with fresh node and mesh ids per test, so
tests running in parallel (or other engineers' nodes on the same host) only ever appear to each
other as foreign peers, which the assertions ignore.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from zeroconf import IPVersion
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from moltmesh.config import DiscoveryConfig, NodeConfig
from moltmesh.discovery import (
    SERVICE_TYPE,
    Advert,
    Discovery,
    DiscoveryCollector,
    DiscoveryError,
    DiscoveryEvent,
    DiscoveryEventKind,
    MalformedAdvert,
    decode_txt,
    encode_txt,
    plan_interfaces,
)

WAIT_S = 15.0  # upper bound for an awaited event; never a timing assertion
FAST = DiscoveryConfig(probe=False)  # node ids are unique here: skip the ~1 s clash probe


def _id() -> str:
    return uuid.uuid4().hex[:16]


def _advert(mesh: str, ca: str = "sha256-ca", node: str | None = None, port: int = 7946) -> Advert:
    return Advert(node_id=node or _id(), mesh_id=mesh, ca_fingerprint=ca, mesh_port=port,
                  api_port=8470, protocol=1)  # fmt: skip


def _txt(advert: Advert) -> dict[bytes, bytes | None]:
    return {k.encode(): v.encode() for k, v in encode_txt(advert).items()}


async def _event(d: Discovery, node_id: str, kind: DiscoveryEventKind) -> DiscoveryEvent:
    """The next event of ``kind`` about ``node_id``; other events are skipped."""

    async def scan() -> DiscoveryEvent:
        while True:
            event = await d.next_event()
            if event.candidate.node_id == node_id and event.kind is kind:
                return event

    return await asyncio.wait_for(scan(), WAIT_S)


async def _until(predicate: Callable[[], bool]) -> None:
    """Wait until ``predicate()`` holds, checking every 20 ms, failing after WAIT_S."""
    async with asyncio.timeout(WAIT_S):
        while not predicate():
            await asyncio.sleep(0.02)


# -- TXT codec ---------------------------------------------------------------------------------


def test_txt_round_trip_and_unknown_keys_ignored() -> None:
    advert = _advert("mesh-a")
    props = _txt(advert)
    props[b"future"] = b"something"
    props[b"flag"] = None
    assert decode_txt(props, advert.instance_name) == advert


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({b"node": None}, "missing"),
        ({b"mport": b"70000"}, "mport"),
        ({b"mport": b"-1"}, "integer"),
        ({b"aport": b"x"}, "integer"),
        ({b"txtvers": b"2"}, "txtvers"),
        ({b"mesh": b"has space"}, "mesh"),
        ({b"ca": "é".encode()}, "fingerprint"),
        ({b"proto": b"0"}, "proto"),
        ({b"node": b"\xff\xfe"}, "not text"),
    ],
)
def test_txt_malformed_is_rejected_with_a_reason(change: dict, reason: str) -> None:
    advert = _advert("mesh-a")
    props = {**_txt(advert), **change}
    props = {k: v for k, v in props.items() if not (k == b"node" and v is None)}
    with pytest.raises(MalformedAdvert, match=reason):
        decode_txt(props, advert.instance_name)


def test_txt_must_be_found_under_its_own_node_id() -> None:
    advert = _advert("mesh-a")
    with pytest.raises(MalformedAdvert, match="does not carry"):
        decode_txt(_txt(advert), f"someoneelse.{SERVICE_TYPE}")


# -- interfaces --------------------------------------------------------------------------------

TABLE = {"lo": ["127.0.0.1"], "eth0": ["10.9.0.2"], "wlan0": ["10.8.0.5"]}


def test_default_config_listens_and_announces_on_loopback_only() -> None:
    """No stray multicast: a node with the default config never uses the real card."""
    plan = plan_interfaces(NodeConfig().discovery.interfaces, TABLE)
    assert plan.listen == ("127.0.0.1",)
    assert plan.announce == ("127.0.0.1",)
    assert plan_interfaces(NodeConfig().discovery.interfaces).listen == ("127.0.0.1",)


def test_interface_choices() -> None:
    assert plan_interfaces(["all"], TABLE).listen == ("127.0.0.1", "10.9.0.2", "10.8.0.5")
    # a peer cannot reach our loopback: it is never announced next to a routable address
    assert plan_interfaces(["all"], TABLE).announce == ("10.9.0.2", "10.8.0.5")
    assert plan_interfaces(["wlan0"], TABLE).listen == ("10.8.0.5",)
    assert plan_interfaces(["10.9.0.2", "eth0"], TABLE).listen == ("10.9.0.2",)
    for bad in (["eth9"], ["10.1.1.1"], []):
        with pytest.raises(ValueError):
            plan_interfaces(bad, TABLE)


async def test_disabled_discovery_opens_nothing_and_sees_nothing() -> None:
    d = Discovery(_advert("m"), DiscoveryConfig(enabled=False))
    async with d:
        assert d.plan is None and d.candidates() == {}


async def test_unknown_interface_fails_start_by_name() -> None:
    d = Discovery(_advert("m"), DiscoveryConfig(interfaces=["nosuchif0"]))
    with pytest.raises(DiscoveryError, match="nosuchif0"):
        await d.start()


# -- live on loopback --------------------------------------------------------------------------


async def test_peers_of_one_mesh_find_each_other_and_foreign_is_never_a_candidate() -> None:
    mesh = _id()
    a, b = _advert(mesh, port=7001), _advert(mesh, port=7002)
    other = _advert(_id())  # another mesh, same CA name: still foreign
    other_ca = _advert(mesh, ca="sha256-other")  # same mesh id, another CA: foreign too
    seen_foreign: list[str] = []
    da = Discovery(a, FAST, on_foreign=lambda adv, _: seen_foreign.append(adv.node_id))
    db = Discovery(b, FAST)
    dx, dy = Discovery(other, FAST), Discovery(other_ca, FAST)
    async with da, db, dx, dy:
        found = await _event(da, b.node_id, DiscoveryEventKind.FOUND)
        assert found.candidate.advert == b
        assert found.candidate.addresses == ("127.0.0.1",)
        assert found.candidate.endpoints == ("127.0.0.1:7002",)
        assert (await _event(db, a.node_id, DiscoveryEventKind.FOUND)).candidate.advert == a
        await _until(lambda: {other.node_id, other_ca.node_id} <= set(da.foreign()))
        assert {other.node_id, other_ca.node_id} <= set(seen_foreign)
        mine = {a.node_id, b.node_id, other.node_id, other_ca.node_id}
        assert set(da.candidates()) & mine == {b.node_id}  # never itself, never foreign
        assert set(db.candidates()) & mine == {a.node_id}
        assert set(dx.candidates()) & mine == set()
        await _until(lambda: {a.node_id, b.node_id} <= set(dx.foreign()))
    assert da.candidates() == {} and da.foreign() == {}  # a stopped discovery sees nothing


async def test_update_is_reported_and_clean_stop_sends_goodbye() -> None:
    mesh = _id()
    a, b = _advert(mesh), _advert(mesh, port=7100)
    async with Discovery(a, FAST) as da:
        db = Discovery(b, FAST)
        await db.start()
        try:
            await _event(da, b.node_id, DiscoveryEventKind.FOUND)
            moved = Advert(b.node_id, mesh, b.ca_fingerprint, mesh_port=7101, api_port=9000)
            await db.update(moved)
            updated = await _event(da, b.node_id, DiscoveryEventKind.UPDATED)
            assert updated.candidate.advert == moved
        finally:
            await db.stop()
        gone = await _event(da, b.node_id, DiscoveryEventKind.GOODBYE)
        assert gone.candidate.advert.mesh_port == 7101
        assert b.node_id not in da.candidates()
        registry = CollectorRegistry()
        registry.register(DiscoveryCollector(da))
        text = generate_latest(registry).decode()
        assert 'moltmesh_discovery_events_total{kind="found"} 1.0' in text
        assert 'moltmesh_discovery_events_total{kind="updated"} 1.0' in text
        assert 'moltmesh_discovery_events_total{kind="goodbye"} 1.0' in text
        assert "moltmesh_discovery_candidates 0.0" in text


async def test_malformed_txt_is_ignored_and_counted() -> None:
    mesh = _id()
    async with Discovery(_advert(mesh), FAST) as da:
        zc = AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
        bad_id = _id()
        info = AsyncServiceInfo(
            SERVICE_TYPE,
            f"{bad_id}.{SERVICE_TYPE}",
            parsed_addresses=["127.0.0.1"],
            port=7200,
            properties={"txtvers": "1", "node": bad_id, "mesh": mesh, "mport": "99999"},
            server=f"bad-{bad_id}.local.",
        )
        try:
            await (await zc.async_register_service(info, cooperating_responders=True))
            await _until(lambda: da.stats.malformed >= 1)
            assert bad_id not in da.candidates() and bad_id not in da.foreign()
            assert da.stats.found == 0  # the mesh id is fresh: only the bad peer shares it
        finally:
            await (await zc.async_unregister_service(info))
            await zc.async_close()
