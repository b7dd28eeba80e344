"""The real mesh layers in separate namespaces, meeting by mDNS alone; a cut is found by SWIM.

Each host runs ``tests.netns.mesh_driver``: ``MeshService`` (mutual TLS, sealed gossip),
``Discovery`` and the SWIM driver, whose seeds are only what mDNS showed. Credentials are made
beforehand (``mesh init`` and real joins, on loopback); no address is ever typed. Nodes start one
after another (each waits for one candidate), so the first is alone and every later one seeds
from a node already in the mesh. SWIM uses its ``local()`` preset; waits are on printed events.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.mesh.swim_cluster import make_states
from tests.netns.bed import NetBed
from tests.netns.drivers import start_mesh_driver
from tests.netns.procs import JsonLinesProcess, Line

pytestmark = [pytest.mark.netns, pytest.mark.integration]

WAIT_S = 40.0


def _view(status: str, nodes: list[str]) -> Callable[[Line], bool]:
    """A view line in which exactly ``nodes`` have ``status``."""
    want = sorted(nodes)
    return lambda line: line.get("event") == "view" and line.get(status) == want


def _has(status: str, node: str) -> Callable[[Line], bool]:
    return lambda line: line.get("event") == "view" and node in line.get(status, [])


@pytest.mark.timeout(300)  # several real processes; slow under a loaded CI
async def test_nodes_form_one_mesh_by_mdns_alone_and_a_cut_node_is_dead_by_swim(
    make_bed: Callable[[int], NetBed], tmp_path: Path
) -> None:
    seed = random.randrange(2**32)
    print(f"SWIM seed {seed}")  # shown with the failure: rerun a trace with this seed
    states = await make_states(tmp_path / "mesh", 3)
    (outsider,) = await make_states(tmp_path / "other", 1)
    bed = make_bed(4)
    ids = [s.node_id for s in states]
    procs: list[JsonLinesProcess] = []
    for i, state in enumerate(states):
        proc = start_mesh_driver(
            bed, bed.hosts[i], state.data_dir, expect_peers=min(i, 1), seed=seed + i
        )
        proc.wait_for(lambda line: line.get("event") == "swim-started", WAIT_S)
        procs.append(proc)
    other = start_mesh_driver(bed, bed.hosts[3], outsider.data_dir, expect_peers=0, seed=seed + 3)
    other.wait_for(lambda line: line.get("event") == "swim-started", WAIT_S)
    try:
        for i, proc in enumerate(procs):
            peers = [n for n in ids if n != ids[i]]
            proc.wait_for(_view("alive", peers), WAIT_S)
            seeds = proc.wait_for(lambda line: line.get("event") == "seeds")["seeds"]
            assert all(s.split(":")[0] in {h.address for h in bed.hosts[:i]} for s in seeds), (
                f"seed {seed}: seeds {seeds} did not come from earlier nodes"
            )

        # isolate node 2: SWIM declares it dead on both sides (mDNS says nothing)
        marks = [p.mark() for p in procs]
        victim = bed.hosts[2]
        bed.partition([victim], [h for h in bed.hosts if h is not victim])
        for i in (0, 1):
            procs[i].wait_for(_has("dead", ids[2]), WAIT_S, since=marks[i])
        procs[2].wait_for(_view("dead", ids[:2]), WAIT_S, since=marks[2])

        # heal: one mesh again
        marks = [p.mark() for p in procs]
        bed.heal_all()
        for i, proc in enumerate(procs):
            proc.wait_for(_view("alive", [n for n in ids if n != ids[i]]), WAIT_S, since=marks[i])
    finally:
        for proc in (*procs, other):
            proc.stop()

    # the other mesh's node was seen by mDNS, but never a candidate, a seed or a member
    def beyond_foreign(nodes: list[str]) -> Callable[[Line], bool]:
        return lambda line: line.get("event") != "foreign" and any(n in str(line) for n in nodes)

    for proc in procs:
        assert proc.has(lambda line: line.get("event") == "foreign"), proc.describe()
        assert not proc.has(beyond_foreign([outsider.node_id])), f"seed {seed}\n{proc.describe()}"
    assert not other.has(beyond_foreign(ids)), f"seed {seed}\n{other.describe()}"
