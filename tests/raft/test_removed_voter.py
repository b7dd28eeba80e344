"""A voter removed while it was down (the autopilot replaced it) restarts with a log that still
lists it: it must find out, and serve reads and writes through the group as a non-member
instead of waiting forever for a leader that no longer talks to it."""

from __future__ import annotations

import asyncio

from moltmesh.raft import follow
from tests.raft.localnet import LocalNet, eventually


async def test_a_voter_replaced_while_down_rejoins_as_a_non_member(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(follow, "STRANDED_AFTER_S", 0.3)
    net = LocalNet(tmp_path, ["a", "b", "c", "d"], max_learners=0)  # no slot to add it back
    await net.start()
    try:
        a, c = net.nodes["a"], net.nodes["c"]
        await eventually(lambda: len(a.driver.node.voters) == 3 and net.leader() is a, 20,
                         "3 voters, a leads")  # fmt: skip
        gone = next(v for v in a.driver.node.voters if v != "a")
        victim = net.nodes[gone]
        await victim.stop()
        await eventually(lambda: gone not in a.driver.node.voters
                         and len(a.driver.node.voters) == 3, 20, "the voter replaced")  # fmt: skip
        await a.kv.put("after", b"it left")
        await victim.start()  # its own log still lists it as a voter
        await eventually(lambda: gone in victim.driver.node.conf_state.voters, 10, "replayed")
        await eventually(lambda: victim.driver.status()["member"] is False, 10, "it finds out")
        got, _ = await asyncio.wait_for(victim.kv.get("after"), 10)  # linearizable, forwarded
        assert got is not None and got.value == b"it left"
        await asyncio.wait_for(victim.kv.put("from/it", b"ok"), 10)
        got, _ = await a.kv.get("from/it")
        assert got is not None and got.value == b"ok"
        assert c.driver.status()["member"] == (c is not victim)
        for n in net.nodes.values():  # a learner slot opens: the group takes it back
            if n.pilot is not None:
                n.pilot.max_learners = 1
        back = victim.driver
        await eventually(lambda: gone in back.node.conf_state.learners and back.is_member(), 20,
                         "taken back as a learner")  # fmt: skip
    finally:
        await net.stop()
