"""A write a follower forwarded to the leader ends when the follower's node stops: outcome
unknown (it left; the leader may apply it), never an await that lasts forever."""

from __future__ import annotations

import asyncio

import pytest

from moltmesh.raft.driver import OutcomeUnknown, Unavailable
from tests.raft.localnet import three_voters_led_by_a


async def test_a_forwarded_write_fails_when_its_node_stops(tmp_path) -> None:
    async with three_voters_led_by_a(tmp_path) as net:
        b = net.nodes["b"]
        await b.kv.put("warm", b"x", timeout=5)
        write = asyncio.ensure_future(b.kv.put("k", b"v", timeout=30))
        await asyncio.sleep(0)  # the forwarded call is on its way to the leader
        await b.stop()
        with pytest.raises(OutcomeUnknown):
            await asyncio.wait_for(write, 10)  # far below the write's own 30 s timeout
        await b.start()


async def test_a_waiting_watch_ends_when_its_node_stops(tmp_path) -> None:
    """A long poll must not hold a stopping node's HTTP server (it waited out the whole grace
    period, twice): the watch ends at the stop with Unavailable ("stopping")."""
    async with three_voters_led_by_a(tmp_path) as net:
        b = net.nodes["b"]
        await b.kv.put("warm", b"x", timeout=5)
        since = b.kv.local.revision + 1
        watch = asyncio.ensure_future(b.kv.watch("quiet/", since, timeout=3600))
        await asyncio.sleep(0)  # waiting for a change under quiet/
        assert not watch.done()
        await b.stop()
        with pytest.raises(Unavailable, match="stopping"):
            await asyncio.wait_for(watch, 10)  # far below the watch's own hour
        await b.start()


async def test_a_watch_on_a_node_whose_raft_failed_is_unavailable(tmp_path) -> None:
    """review11 L4: after the driver failed, a watch answered 'no change' after every timeout
    as if the node were healthy; it must say Raft stopped, as every other call does."""
    async with three_voters_led_by_a(tmp_path) as net:
        b = net.nodes["b"]
        await b.kv.put("warm", b"x", timeout=5)
        since = b.kv.local.revision + 1
        b.driver.failure = OSError(28, "No space left on device")  # as the Ready loop sets it
        with pytest.raises(Unavailable, match="raft stopped"):
            await asyncio.wait_for(b.kv.watch("quiet/", since, timeout=3600), 10)
        b.driver.failure = None
