"""Real ``moltmesh node`` processes in separate namespaces: joining over the bed's bridge, and a
cut link found dead by SWIM.

The CA holder runs on h0's bridge address; new devices join with tokens that name that address
and meet it as their seed, so every byte crosses the bridge. A reset cut makes h2's first join
fail with a clear error (connection refused) instead of hanging; after the heal the same token
works (a join that never connected does not use it up). Then h2 is isolated: SWIM (``local``
preset) declares it dead in the other views and the others dead in its own; after the heal all
are alive again. Views are read with ``moltmesh status`` inside each namespace.

The second test gives no seeds at all: joined devices meet by mDNS alone (discovery on ``all``
interfaces inside the namespaces), and a node of another mesh on the same bridge never becomes a
member.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from moltmesh.mesh import store
from tests.netns.bed import NetBed
from tests.netns.nodes import RealNode, mesh_view, moltmesh, wait_view

pytestmark = [pytest.mark.netns, pytest.mark.integration]

MESH_PORT = "8471"
ENV = {"MOLTMESH_MESH_SWIM": "local", "MOLTMESH_LOG_LEVEL": "warning"}


@pytest.mark.timeout(300)  # several real processes; slow under a loaded CI
def test_real_nodes_join_over_the_bridge_and_a_cut_node_is_dead_by_swim(
    make_bed: Callable[[int], NetBed], tmp_path: Path
) -> None:
    bed = make_bed(3)
    hosts = bed.hosts
    dirs = [tmp_path / h.label for h in hosts]
    init = moltmesh(bed, hosts[0], "mesh", "init", "--data-dir", str(dirs[0]))
    assert init.returncode == 0, init.stderr
    holder_address = f"{hosts[0].address}:{MESH_PORT}"

    def node(i: int, *args: str) -> RealNode:
        return RealNode.start(bed, hosts[i], dirs[i], "--mesh-host", hosts[i].address,
                              "--mesh-port", MESH_PORT, *args, env=ENV)  # fmt: skip

    nodes = [node(0)]
    nodes[0].wait_serving()
    tokens = []
    for _ in range(2):
        made = moltmesh(bed, hosts[0], "mesh", "token", "--data-dir", str(dirs[0]),
                        "--address", holder_address)  # fmt: skip
        assert made.returncode == 0, made.stderr
        tokens.append(made.stdout.strip())
    try:
        nodes.append(node(1, "--token", tokens[0], "--seed", holder_address))
        assert nodes[1].wait_line("joined mesh").split()[2] == store.load(dirs[0]).mesh_id
        nodes[1].wait_serving()

        bed.cut(hosts[0], hosts[2], reset=True)
        refused = moltmesh(bed, hosts[2], "node", "--data-dir", str(dirs[2]),
                           "--no-bundled-models", "--token", tokens[1], timeout=30)  # fmt: skip
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "cannot join" in refused.stderr and "Errno 111" in refused.stderr  # ECONNREFUSED
        assert not store.has_mesh(dirs[2])
        bed.heal_all()

        nodes.append(node(2, "--token", tokens[1], "--seed", holder_address))
        nodes[2].wait_line("joined mesh")
        nodes[2].wait_serving()
        ids = [store.load(d).node_id for d in dirs]

        def all_alive(i: int) -> Callable[[dict[str, str]], bool]:
            others = {n for n in ids if n != ids[i]}
            return lambda v: {n for n, s in v.items() if s == "alive"} == others

        for i in range(3):
            wait_view(bed, hosts[i], dirs[i], all_alive(i), "everyone alive")

        bed.partition([hosts[2]], hosts[:2])
        for i in (0, 1):
            wait_view(bed, hosts[i], dirs[i], lambda v: v.get(ids[2]) == "dead", "h2 dead")
        wait_view(bed, hosts[2], dirs[2],
                  lambda v: v.get(ids[0]) == v.get(ids[1]) == "dead", "h0 and h1 dead")  # fmt: skip

        bed.heal_all()
        for i in range(3):
            wait_view(bed, hosts[i], dirs[i], all_alive(i), "everyone alive after the heal")
    finally:
        codes = [n.stop() for n in reversed(nodes)]
    assert codes == [0] * len(nodes)


@pytest.mark.timeout(300)
def test_real_nodes_meet_by_mdns_alone_and_another_mesh_is_never_a_member(
    make_bed: Callable[[int], NetBed], tmp_path: Path
) -> None:
    bed = make_bed(4)
    hosts = bed.hosts
    dirs = [tmp_path / h.label for h in hosts]
    for i in (0, 3):  # h3 founds a mesh of its own on the same bridge
        made = moltmesh(bed, hosts[i], "mesh", "init", "--data-dir", str(dirs[i]))
        assert made.returncode == 0, made.stderr
    env = {**ENV, "MOLTMESH_DISCOVERY_INTERFACES": "all", "MOLTMESH_DISCOVERY_PROBE": "false"}

    def node(i: int, *args: str) -> RealNode:
        return RealNode.start(bed, hosts[i], dirs[i], "--mesh-host", hosts[i].address,
                              "--mesh-port", MESH_PORT, *args, env=env)  # fmt: skip

    nodes = [node(0), node(3)]
    try:
        for n in nodes:
            n.wait_serving()
        for i in (1, 2):
            made = moltmesh(bed, hosts[0], "mesh", "token", "--data-dir", str(dirs[0]),
                            "--address", f"{hosts[0].address}:{MESH_PORT}")  # fmt: skip
            assert made.returncode == 0, made.stderr
            nodes.append(node(i, "--token", made.stdout.strip()))  # no --seed
            nodes[-1].wait_serving()
        ids = [store.load(d).node_id for d in dirs]
        members = set(ids[:3])
        for i in range(3):
            wait_view(bed, hosts[i], dirs[i],
                      lambda v, me=ids[i]: {n for n, s in v.items() if s == "alive"}
                      == members - {me}, "the three alive, met by mDNS alone")  # fmt: skip
        for i in range(3):
            assert ids[3] not in mesh_view(bed, hosts[i], dirs[i])
        assert mesh_view(bed, hosts[3], dirs[3]) == {}  # the other mesh sees none of ours
    finally:
        codes = [n.stop() for n in reversed(nodes)]
    assert codes == [0] * len(nodes)


@pytest.mark.timeout(300)
def test_nodes_on_the_default_wildcard_host_advertise_their_own_address(
    make_bed: Callable[[int], NetBed], tmp_path: Path
) -> None:
    """No ``--mesh-host``: the nodes listen on 0.0.0.0 and must tell peers a reachable address
    (a peer pinging 0.0.0.0 would ping itself); ``mesh token`` needs no ``--address`` then."""
    bed = make_bed(2)
    hosts = bed.hosts
    dirs = [tmp_path / h.label for h in hosts]
    assert moltmesh(bed, hosts[0], "mesh", "init", "--data-dir", str(dirs[0])).returncode == 0
    holder_address = f"{hosts[0].address}:{MESH_PORT}"
    nodes = [RealNode.start(bed, hosts[0], dirs[0], "--mesh-port", MESH_PORT, env=ENV)]
    try:
        nodes[0].wait_serving()
        made = moltmesh(bed, hosts[0], "mesh", "token", "--data-dir", str(dirs[0]))
        assert made.returncode == 0, made.stderr
        assert made.stdout.strip().endswith(holder_address)
        joining = ("--token", made.stdout.strip(), "--seed", holder_address)
        nodes.append(RealNode.start(bed, hosts[1], dirs[1], "--mesh-port", MESH_PORT, *joining,
                                    env=ENV))  # fmt: skip
        nodes[1].wait_serving()
        ids = [store.load(d).node_id for d in dirs]
        for i, other in ((0, 1), (1, 0)):
            wait_view(bed, hosts[i], dirs[i], lambda v, o=ids[other]: v.get(o) == "alive",
                      "the other node alive")  # fmt: skip
        done = moltmesh(bed, hosts[0], "status", "--data-dir", str(dirs[0]), "--json")
        addresses = {m["node"]: m["address"] for m in json.loads(done.stdout)["members"]}
        assert addresses == {ids[i]: f"{hosts[i].address}:{MESH_PORT}" for i in (0, 1)}
    finally:
        codes = [n.stop() for n in reversed(nodes)]
    assert codes == [0] * len(nodes)
