"""SWIM over the mesh's sealed UDP and TLS streams, with real sockets and the ``local()`` preset.

Each test waits on membership events (never fixed sleeps); failures print the seed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from consensus.swim_messages import MemberStatus
from moltmesh.mesh.drops import DropReason
from tests.mesh.swim_cluster import (
    all_alive,
    all_see,
    crash,
    make_states,
    seeded,
    start_cluster,
    start_node,
    wait_views,
)

pytestmark = pytest.mark.both_loops


async def test_nodes_join_by_seed_detect_a_crash_and_a_restart(tmp_path: Path):
    seed = seeded()
    nodes = await start_cluster(tmp_path, 4, seed)
    try:
        await wait_views(nodes, all_alive(nodes), "everyone alive", seed)
        victim = nodes[2]
        before = nodes[0].incarnation_of(victim.node_id)
        await crash(victim)
        others = [n for n in nodes if n is not victim]
        await wait_views(others, all_see(others, victim.node_id, MemberStatus.DEAD),
                         "the crashed node dead everywhere", seed)  # fmt: skip
        restarted = await start_node(victim.state, [nodes[0].service.address], seed + 99)
        nodes[2] = restarted
        await wait_views(nodes, all_alive(nodes), "the restarted node alive again", seed)
        assert all(n.incarnation_of(victim.node_id) > before for n in others), seed
        assert all(n.service.drops.total() == 0 for n in others), seed
    finally:
        for n in nodes:
            await n.driver.stop()
            await n.service.stop()


async def test_graceful_leave_is_seen_as_left(tmp_path: Path):
    seed = seeded()
    nodes = await start_cluster(tmp_path, 3, seed)
    try:
        await wait_views(nodes, all_alive(nodes), "everyone alive", seed)
        leaver = nodes[1]
        await leaver.driver.stop()
        await leaver.service.stop()
        others = [nodes[0], nodes[2]]
        await wait_views(others, all_see(others, leaver.node_id, MemberStatus.LEFT),
                         "the leaver LEFT everywhere", seed)  # fmt: skip
    finally:
        for n in (nodes[0], nodes[2]):
            await n.driver.stop()
            await n.service.stop()


async def test_outsiders_and_revoked_nodes_never_change_a_view(tmp_path: Path):
    seed = seeded()
    nodes = await start_cluster(tmp_path, 3, seed)
    outsider_states = await make_states(tmp_path / "other", 1)
    outsider = await start_node(outsider_states[0], [nodes[0].service.address], seed + 7)
    try:
        await wait_views(nodes, all_alive(nodes), "everyone alive", seed)
        # The outsider (another mesh's CA) keeps trying to join by push-pull, and is refused.
        await wait_views([*nodes, outsider], lambda: outsider.driver.stream_failures >= 3,
                         "the outsider refused three times", seed)  # fmt: skip
        assert all(outsider.node_id not in n.view() for n in nodes), seed
        assert set(outsider.view()) == {outsider.node_id}, seed
        # Revoke a member: it is refused everywhere and ends up dead in every other view.
        holder, revoked = nodes[0], nodes[2]
        holder.service.add_peer(nodes[1].node_id, nodes[1].service.address)
        holder.service.add_peer(revoked.node_id, revoked.service.address)
        results = await holder.service.revoke(revoked.node_id)
        assert results == {nodes[1].node_id: None}, seed
        others = nodes[:2]
        await wait_views(others, all_see(others, revoked.node_id, MemberStatus.DEAD),
                         "the revoked node dead everywhere", seed)  # fmt: skip
        assert nodes[1].service.drops.get(DropReason.REVOKED) > 0, seed
        assert all(n.view().get(m.node_id) == MemberStatus.ALIVE for n in others for m in others)
    finally:
        for n in [*nodes, outsider]:
            await n.driver.stop()
            await n.service.stop()
