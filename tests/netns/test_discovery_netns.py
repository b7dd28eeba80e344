"""Discovery between hosts: driver processes in separate namespaces on one bridge, mDNS alone.

No seeds anywhere: each driver only announces and browses (``interfaces = all`` inside its
namespace, the way a device is configured). Absence ("never a candidate", "stays silent") is
shown against a witness event that must come later on the same path; waits are on printed
events with a failure bound, never fixed sleeps.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from tests.netns.bed import NetBed
from tests.netns.drivers import start_driver
from tests.netns.procs import JsonLinesProcess, Line

pytestmark = pytest.mark.netns


def _id() -> str:
    return uuid.uuid4().hex[:16]


def _is(event: str, node: str, **fields: object) -> Callable[[Line], bool]:
    return lambda line: (
        line.get("event") == event
        and line.get("node") == node
        and all(line.get(k) == v for k, v in fields.items())
    )


def _about(node: str) -> Callable[[Line], bool]:
    return lambda line: line.get("node") == node and line.get("event") != "started"


def _started(*procs: JsonLinesProcess) -> None:
    for proc in procs:
        proc.wait_for(lambda line: line.get("event") == "started")


def test_nodes_find_each_other_by_mdns_alone_and_foreign_mesh_is_never_a_candidate(
    make_bed: Callable[[int], NetBed],
) -> None:
    bed = make_bed(4)
    mesh, other_mesh = _id(), _id()
    ids = [_id() for _ in bed.hosts]
    procs = [
        start_driver(bed, host, ids[i], mesh if i < 3 else other_mesh)
        for i, host in enumerate(bed.hosts)
    ]
    _started(*procs)
    members = list(zip(bed.hosts[:3], ids[:3], procs[:3], strict=True))
    for _, node, proc in members:
        for peer_host, peer, _ in members:
            if peer != node:
                found = proc.wait_for(_is("found", peer))
                assert found["addresses"] == [peer_host.address]  # its bridge address only
        proc.wait_for(_is("foreign", ids[3], mesh=other_mesh))
    for node in ids[:3]:
        procs[3].wait_for(_is("foreign", node, mesh=mesh))
    for proc in procs:
        assert proc.stop() == 0
    for _, node, proc in members:
        assert not proc.has(_is("found", ids[3])), proc.describe()
        assert not proc.has(_is("found", node)), "a node reported itself"
    assert not procs[3].has(lambda line: line.get("event") == "found"), procs[3].describe()


def test_clean_stop_is_a_goodbye_in_every_view(make_bed: Callable[[int], NetBed]) -> None:
    bed = make_bed(3)
    mesh = _id()
    ids = [_id() for _ in bed.hosts]
    procs = [start_driver(bed, host, ids[i], mesh) for i, host in enumerate(bed.hosts)]
    _started(*procs)
    for i, proc in enumerate(procs[1:], start=1):
        proc.wait_for(_is("found", ids[0]))
        procs[0].wait_for(_is("found", ids[i]))
    assert procs[0].stop() == 0
    stopping = procs[0].wait_for(lambda line: line.get("event") == "stopping")
    for proc in procs[1:]:
        gone = proc.wait_for(_is("goodbye", ids[0]))
        assert gone["t"] >= stopping["t"]


def test_cut_link_is_silent_in_mdns_and_heal_makes_the_peer_visible_again(
    make_bed: Callable[[int], NetBed],
) -> None:
    """mDNS never reports a cut link: SWIM must detect it (this test shows why)."""
    bed = make_bed(3)
    a_host, b_host, _ = bed.hosts
    mesh = _id()
    a_id, b_id, c_id = (_id() for _ in bed.hosts)
    ids = (a_id, b_id, c_id)
    a, b, c = (start_driver(bed, h, n, mesh) for h, n in zip(bed.hosts, ids, strict=True))
    _started(a, b, c)
    for proc, peers in ((a, (b_id, c_id)), (b, (a_id, c_id)), (c, (a_id, b_id))):
        for peer in peers:
            proc.wait_for(_is("found", peer))

    bed.cut(a_host, b_host)
    b.send("update 9001")  # b re-announces while cut off from a...
    c.wait_for(_is("updated", b_id, api_port=9001))  # ...c hears it...
    c.send("update 9002")  # ...and only then announces something itself
    a.wait_for(_is("updated", c_id, api_port=9002))  # witness: a's mDNS is alive and current
    b.wait_for(_is("updated", c_id, api_port=9002))
    assert not a.has(_is("updated", b_id)), "b's announcement crossed the cut"
    assert not a.has(_is("goodbye", b_id)), "mDNS reported a cut link as a goodbye"
    assert not b.has(_is("goodbye", a_id)), "mDNS reported a cut link as a goodbye"

    bed.heal(a_host, b_host)
    b.send("update 9003")
    a.wait_for(_is("updated", b_id, api_port=9003))  # visible again after the heal
    for proc in (a, b, c):
        assert proc.stop() == 0


def test_default_config_never_announces_on_the_bridge(make_bed: Callable[[int], NetBed]) -> None:
    """No stray multicast: the default (loopback) stays inside its host."""
    bed = make_bed(3)
    mesh = _id()
    quiet_id, x_id, y_id = (_id() for _ in bed.hosts)
    quiet = start_driver(bed, bed.hosts[0], quiet_id, mesh, interfaces="loopback")
    _started(quiet)
    x = start_driver(bed, bed.hosts[1], x_id, mesh)
    y = start_driver(bed, bed.hosts[2], y_id, mesh)
    _started(x, y)
    x.wait_for(_is("found", y_id))
    y.wait_for(_is("found", x_id))
    quiet.send("update 9100")  # announce again now that x and y listen on the bridge
    quiet.wait_for(lambda line: line.get("event") == "self-updated")
    y.send("update 9200")
    x.wait_for(_is("updated", y_id, api_port=9200))  # witness, sent after quiet's announcement
    assert quiet.wait_for(lambda line: line.get("event") == "started")["announce"] == ["127.0.0.1"]
    assert not x.has(_about(quiet_id)), x.describe()
    assert not y.has(_about(quiet_id)), y.describe()
    assert not quiet.has(lambda line: line.get("event") in ("found", "foreign")), quiet.describe()


def test_a_second_host_with_the_same_node_id_is_refused(
    make_bed: Callable[[int], NetBed],
) -> None:
    bed = make_bed(2)
    mesh, node = _id(), _id()
    first = start_driver(bed, bed.hosts[0], node, mesh)
    _started(first)
    clone = start_driver(bed, bed.hosts[1], node, mesh, probe=True)
    error = clone.wait_for(lambda line: line.get("event") in ("error", "started"))
    assert error["event"] == "error" and "copied" in error["message"], clone.describe()
    assert clone.proc.wait(20) == 2
