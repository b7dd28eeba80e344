"""An in-process group over the real driver, durable log, KV service and autopilot."""

from __future__ import annotations

import pytest

from consensus.kv_types import CompactedRevisionError
from moltmesh.raft.driver import Unavailable
from moltmesh.raft.kvservice import CasMismatch
from tests.raft.localnet import LocalNet, eventually

pytestmark = pytest.mark.asyncio


async def test_bootstrap_autopilot_and_kv(tmp_path):
    net = LocalNet(tmp_path, ["a", "b", "c", "d", "e", "f"])
    await net.start()
    try:
        a = net.nodes["a"]
        await eventually(
            lambda: len(a.driver.node.voters) == 5 and a.driver.node.learners, what="5 voters"
        )
        conf = a.driver.node.conf_state
        assert conf.voters == ("a", "b", "c", "d", "e") and conf.learners == ("f",)
        r = await net.nodes["f"].kv.put("k", b"v1")
        got, rev = await net.nodes["c"].kv.get("k")
        assert got is not None and got.value == b"v1" and rev >= r.revision
        with pytest.raises(CasMismatch):
            await net.nodes["b"].kv.cas("k", r.revision + 100, b"x")
        w = await net.nodes["b"].kv.cas("k", r.revision, b"v2")
        items, _ = await net.nodes["e"].kv.list("")
        assert [(i.key, i.value) for i in items] == [("k", b"v2")]
        events, _ = await net.nodes["d"].kv.watch("k", r.revision, exact=True, timeout=0.1)
        assert [e.revision for e in events] == [r.revision, w.revision]
    finally:
        await net.stop()


async def test_leader_loss_restart_and_replacement(tmp_path):
    net = LocalNet(tmp_path, ["a", "b", "c", "d"], snapshot_entries=20)
    await net.start()
    try:
        a = net.nodes["a"]
        await eventually(lambda: len(a.driver.node.voters) == 3, what="3 voters")
        for i in range(50):
            await net.nodes["d"].kv.put(f"k{i}", str(i).encode())
        old = net.leader()
        await old.stop()
        await eventually(lambda: net.leader() not in (None, old), what="a new leader")
        survivor = net.leader()
        got, _ = await survivor.kv.get("k49")
        assert got is not None and got.value == b"49"
        # the dead voter is replaced by the learner once the stabilization period passed
        await eventually(
            lambda: (
                old.id not in survivor.driver.node.voters and len(survivor.driver.node.voters) == 3
            ),
            what="replacement",
        )
        await survivor.kv.put("after", b"1")
        await old.start()  # restarts from its log (and snapshot) and catches up
        await eventually(
            lambda: (
                old.driver.kv.get("after") is not None or old.kv.follow_kv.get("after") is not None
            ),
            what="catch-up",
        )
        assert old.driver.storage.has_snapshot() or old.kv.follow_kv.get("k0") is not None
    finally:
        await net.stop()


async def test_minority_refuses_writes_but_serves_stale_reads(tmp_path):
    net = LocalNet(tmp_path, ["a", "b", "c"])
    await net.start()
    try:
        a = net.nodes["a"]
        await eventually(lambda: len(a.driver.node.voters) == 3, what="3 voters")
        await a.kv.put("x", b"1")
        await eventually(lambda: net.nodes["c"].driver.kv.get("x") is not None, what="applied")
        for other in ("a", "b"):
            net.cut.add(frozenset(("c", other)))
        c = net.nodes["c"].kv
        # once its election timer fires, the cut-off voter knows it has no leader
        await eventually(lambda: c.driver.leader() is None, what="c loses its leader")
        with pytest.raises(Unavailable):
            await c.put("x", b"2", timeout=0.5)
        with pytest.raises(Unavailable):
            await c.get("x", timeout=0.5)
        got, _ = await c.get("x", consistency="stale")
        assert got is not None and got.value == b"1"
    finally:
        await net.stop()


async def test_a_non_member_follows_by_watch_stream_and_forwards(tmp_path):
    net = LocalNet(tmp_path, ["a", "b", "c", "d"], max_learners=0, kv_retain=5)
    await net.start()
    try:
        a, d = net.nodes["a"], net.nodes["d"]
        await eventually(lambda: len(a.driver.node.voters) == 3, what="3 voters")
        assert not d.driver.is_member()  # no learner slots: d follows by watch stream
        first = await d.kv.put("w", b"0")  # forwarded to the leader
        for i in range(1, 10):
            await d.kv.put("w", str(i).encode())
        got, _ = await d.kv.get("w")  # linearizable: asked of a member
        assert got is not None and got.value == b"9"
        await eventually(
            lambda: (kv := d.kv.follow_kv.get("w")) is not None and kv.value == b"9",
            what="the follow stream delivers",
        )
        stale, _ = await d.kv.get("w", consistency="stale")
        assert stale is not None and stale.value == b"9"
        with pytest.raises(CompactedRevisionError):  # retain=5: the first change is forgotten
            await d.kv.watch("w", first.revision, exact=True, timeout=0.1)
    finally:
        await net.stop()
