"""A watcher waits for changes under its own prefix only: writes to other keys do not wake it
(a mesh-config watcher used to wake, scan and re-arm a timer on every applied batch of an
app's write load), and a change under its prefix does, on the leader and on a follower."""

from __future__ import annotations

import asyncio

import pytest

from consensus.errors import ConfChangeError
from consensus.messages import ConfChange, ConfChangeType
from moltmesh.raft import kvservice
from moltmesh.raft.watchers import ChangeWaiters
from tests.raft.localnet import eventually, three_voters_led_by_a


async def test_only_matching_changes_wake_a_waiter() -> None:
    waiters = ChangeWaiters()
    mesh, apps = waiters.wait("mesh/"), waiters.wait("app/")
    waiters.notify(["k1", "app/x"])
    assert apps.done() and not mesh.done()
    assert len(waiters) == 1
    waiters.notify(None)  # anything may have changed
    assert mesh.done() and len(waiters) == 0
    everything, mesh, config = waiters.wait(""), waiters.wait("mesh/"), waiters.wait("mesh/c")
    waiters.notify([])
    assert not everything.done()
    waiters.notify(["k1", "mesh/a"])
    assert everything.done() and mesh.done() and not config.done()


async def test_a_waiter_that_gives_up_is_forgotten() -> None:
    waiters = ChangeWaiters()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await waiters.wait("mesh/")
    await asyncio.sleep(0)  # its done callback runs
    assert len(waiters) == 0


async def test_a_waiter_cancelled_in_the_same_turn_is_skipped() -> None:
    """Cancelled and not yet forgotten (its done callback waits for the next turn): a change
    under its prefix must not set it again (that would raise inside the Raft loop)."""
    waiters = ChangeWaiters()
    gone, kept = waiters.wait("mesh/"), waiters.wait("mesh/")
    gone.cancel()
    waiters.notify(["mesh/config"])
    assert kept.done() and gone.cancelled()
    await asyncio.sleep(0)
    assert len(waiters) == 0


async def test_writes_elsewhere_do_not_wake_a_watch(tmp_path, monkeypatch) -> None:
    waits: dict[int, int] = {}  # id(ChangeWaiters) -> futures it handed out
    inner = ChangeWaiters.wait

    def counting(self: ChangeWaiters, prefix: str) -> asyncio.Future[None]:
        waits[id(self)] = waits.get(id(self), 0) + 1
        return inner(self, prefix)

    monkeypatch.setattr(ChangeWaiters, "wait", counting)
    async with three_voters_led_by_a(tmp_path) as net:
        a, b = net.nodes["a"], net.nodes["b"]
        loop = asyncio.get_running_loop()
        since = a.kv.local.revision + 1
        watches = {n: asyncio.create_task(n.kv.watch("mesh/", since, timeout=60)) for n in (a, b)}
        await eventually(lambda: all(len(n.driver.changes) == 1 for n in (a, b)), 5,
                         "both watches wait")  # fmt: skip
        started = loop.time()
        batches = 10
        for i in range(batches):
            await asyncio.gather(*(a.kv.put(f"k{i}-{j}", b"v") for j in range(20)))
        last = a.driver.node.last_index
        await eventually(lambda: b.driver.kv.applied_index >= last, 10, "b applied the writes")
        # A watch re-arms once a second on its own; a wake-up per applied batch would be more.
        rearms = int(loop.time() - started) + 1
        assert rearms < batches, "the writes took too long to tell wake-ups from re-arms"
        for n in (a, b):
            assert not watches[n].done()
            assert waits[id(n.driver.changes)] <= 1 + rearms
        rev = (await a.kv.put("mesh/config", b"{}")).revision
        for n in (a, b):
            events, _ = await asyncio.wait_for(watches[n], 10)
            assert [(e.key, e.revision) for e in events] == [("mesh/config", rev)]


async def test_a_watch_wakes_when_its_node_leaves_the_group(tmp_path, monkeypatch) -> None:
    """A node that leaves the group reads the followed copy from then on: a watch waiting on
    the Raft copy wakes at once to look there, not at its next re-arm; and the other way round
    when the node joins again."""
    monkeypatch.setattr(kvservice, "WATCH_REARM_S", 600.0)  # only a wake-up can end the wait
    async with three_voters_led_by_a(tmp_path) as net:
        a = net.nodes["a"]
        for n in net.nodes.values():
            await n.pilot.stop()  # nobody puts a back while the test looks
        watch = asyncio.create_task(a.kv.watch("mesh/", a.kv.local.revision + 1, timeout=600))
        await eventually(lambda: len(a.driver.changes) == 1, 5, "the watch waits")
        waiting = next(iter(a.driver.changes._waiting))
        # the leader removes itself: it applies the change, steps down and is no member
        await a.driver.propose_conf_change(ConfChange(ConfChangeType.REMOVE_VOTER, "a"), 5)
        await eventually(lambda: not a.driver.is_member(), 10, "a left the group")
        await eventually(waiting.done, 5, "the watch woke")
        assert not watch.done()  # it went on waiting, on the followed copy now
        # and back: once a is a member again, the watch reads the Raft copy at once
        await eventually(lambda: net.leader() not in (None, a), 10, "b or c leads")
        leader = net.leader()
        assert leader is not None
        add_a = ConfChange(ConfChangeType.ADD_LEARNER, "a")
        while True:  # a new leader takes a change once it has applied the one before (a's removal)
            try:
                await leader.driver.propose_conf_change(add_a, 5)
                break
            except ConfChangeError:
                await asyncio.wait_for(leader.driver.applied_event().wait(), 10)
        await eventually(a.driver.is_member, 10, "a is back in the group")
        rev = (await leader.kv.put("mesh/back", b"1")).revision
        events, _ = await asyncio.wait_for(watch, 10)
        assert ("mesh/back", rev) in [(e.key, e.revision) for e in events]
