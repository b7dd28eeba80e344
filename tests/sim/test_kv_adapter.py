"""The KV adapter's snapshot duties in the simulator: nodes snapshot and compact as they apply,
a restarted node resumes from its snapshot, and a learner added after compaction catches up by
InstallSnapshot — ending with the same store, byte for byte."""

from __future__ import annotations

import dataclasses

from consensus.messages import ConfChange, ConfChangeType
from sim.cluster import ms
from sim.kv_clients import KvClientSpec, leader_of
from sim.kv_run import KvScenario, build, settled_leader
from sim.scenario import LinkSpec

SCENARIO = KvScenario(
    "adapter",
    voters=3,
    spares=1,
    link=LinkSpec(delay_ms=1.0, jitter_ms=0.0),
    clients=KvClientSpec(clients=3, keys=5, interval_ms=5.0, weights=(1, 1, 1, 0, 0, 0)),
    snapshot_every=20,
    snapshot_keep=0,
)


def test_restart_resumes_from_the_snapshot_and_catches_up() -> None:
    h = build(SCENARIO, seed=11)
    c = h.cluster
    c.start()
    h.clients.start()
    c.run_for(ms(1_500))
    lead = settled_leader(c)
    assert lead is not None
    victim = next(i for i in h.members0 if i != lead)
    c.crash(victim)
    disk = c.nodes[victim].disk
    assert disk.snapshot_index() > 0 and disk.first_index() > 1, "no snapshot/compaction"
    c.run_for(ms(1_000))
    c.restart(victim)
    node = c.nodes[victim]
    assert node.app.store.applied_index >= disk.snapshot().meta.index  # restored at boot
    h.clients.stop()
    c.run_for(ms(1_000))
    leader = leader_of(c)
    assert leader is not None
    assert node.app.applied_index == leader.app.applied_index
    assert node.app.store.snapshot() == leader.app.store.snapshot()


def test_learner_joins_by_install_snapshot() -> None:
    h = build(dataclasses.replace(SCENARIO, snapshot_keep=0), seed=12)
    c = h.cluster
    c.start()
    h.clients.start()
    c.run_for(ms(1_500))
    lead = settled_leader(c)
    assert lead is not None
    assert c.nodes[lead].core.first_index > 1, "the leader has not compacted its log"
    spare = "n3"
    c.call(lead, lambda core, now: core.propose_conf_change(
        ConfChange(ConfChangeType.ADD_LEARNER, spare), now))  # fmt: skip
    c.run_for(ms(1_000))
    assert h.adapter.stats.installed >= 1
    assert c.nodes[spare].app.restored_from > 0
    h.clients.stop()
    c.run_for(ms(1_000))
    leader = leader_of(c)
    assert leader is not None and spare in leader.core.learners
    assert c.nodes[spare].app.store.snapshot() == leader.app.store.snapshot()
