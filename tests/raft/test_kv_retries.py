"""Writes and reads that must try again wait between tries instead of spinning the event loop,
and a request that never left is reported as not applied (503), not as unknown (504)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from consensus.kv_types import Batch, Put, encode_command
from moltmesh.raft import kvservice
from moltmesh.raft.driver import OutcomeUnknown, Unavailable
from moltmesh.raft.proto import KvOp, KvRequest, KvStatus
from tests.raft.localnet import three_voters_led_by_a


async def test_a_write_during_a_leadership_transfer_does_not_spin(tmp_path) -> None:
    async with three_voters_led_by_a(tmp_path) as net:
        a = net.nodes["a"]
        await a.kv.put("k", b"1")
        net.cut.add(frozenset(("a", "b")))  # the transfer target is unreachable: it stays pending
        a.driver.transfer_leadership("b")
        calls = 0
        inner = a.driver.propose

        async def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
            nonlocal calls
            calls += 1
            return await inner(*args, **kwargs)

        a.driver.propose = counting  # type: ignore[method-assign]
        with contextlib.suppress(Unavailable, OutcomeUnknown):  # or applied once it aborts
            await a.kv.put("k", b"2", timeout=0.5)
        # one try per pause at most (a spinning retry made ~100,000 in 0.5 s)
        assert calls <= 0.5 / kvservice.RETRY_PAUSE_S + 10, calls


async def test_a_forwarded_write_that_cannot_be_sent_is_not_applied(tmp_path) -> None:
    async with three_voters_led_by_a(tmp_path) as net:
        a, b = net.nodes["a"], net.nodes["b"]
        await a.kv.put("k", b"1")
        b.kv._send = lambda dst, channel, body: False  # every stream refuses: nothing leaves
        b.driver._leader_seen.set()
        assert b.driver.leader() == "a"
        with pytest.raises(Unavailable, match="unreachable"):
            await b.kv.propose(b"\x00", 0.3)  # a follower forwards to the leader


async def test_a_read_asks_another_member_when_one_does_not_answer(tmp_path, monkeypatch) -> None:
    async with three_voters_led_by_a(tmp_path) as net:
        a = net.nodes["a"]
        await a.kv.put("k", b"1")
        outsider = net.nodes["c"]
        monkeypatch.setattr(outsider.driver, "is_member", lambda: False)  # reads are forwarded
        outsider.kv._members_hint = ("a", "b")
        net.cut.add(frozenset(("c", "b")))  # b never answers c
        monkeypatch.setattr(kvservice, "READ_ATTEMPT_S", 0.2)
        for _ in range(4):  # whichever member it picks first, the read succeeds
            outsider.kv._members_hint = ("a", "b")
            kv, _rev = await asyncio.wait_for(outsider.kv.get("k", timeout=2.0), 5)
            assert kv is not None and kv.value == b"1"


async def test_a_forwarded_command_that_is_not_one_never_reaches_the_log(tmp_path) -> None:
    async with three_voters_led_by_a(tmp_path) as net:
        a, b = net.nodes["a"], net.nodes["b"]
        await a.kv.put("k", b"1")
        last = a.driver.node.last_index
        reply = await b.kv.propose(b"\x00garbage", 2.0)  # b forwards it to the leader
        assert reply.status is KvStatus.REJECTED and "not a KV command" in reply.reason
        batch = encode_command(Batch((encode_command(Put("x", b"")),)))  # only leaders batch
        reply = await b.kv.propose(batch, 2.0)
        assert reply.status is KvStatus.REJECTED and "batch" in reply.reason
        with pytest.raises(ValueError, match="batch"):
            await a.kv.propose(batch, 2.0)  # nor proposed on the leader itself
        assert a.driver.node.last_index == last


async def test_a_peer_with_too_many_requests_in_flight_is_refused(tmp_path, monkeypatch) -> None:
    async with three_voters_led_by_a(tmp_path) as net:
        a, b = net.nodes["a"], net.nodes["b"]
        monkeypatch.setattr(kvservice, "MAX_SERVED_PER_PEER", 0)
        reply = await b.kv.call("a", KvRequest(0, KvOp.READ, key="k"), 2.0)
        assert reply.status is KvStatus.UNAVAILABLE and "in flight" in reply.reason
        assert a.kv.stats.busy_refused == 1
