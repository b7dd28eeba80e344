"""A write a follower forwarded to the leader ends when the follower's node stops: outcome
unknown (it left; the leader may apply it), never an await that lasts forever."""

from __future__ import annotations

import asyncio

import pytest

from moltmesh.raft.driver import OutcomeUnknown
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
