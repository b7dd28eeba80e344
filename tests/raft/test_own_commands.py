"""The leader groups the KV commands proposed together into ``Batch`` entries and applies its own
commands without decoding their entries again (issue 8, throughput); followers decode each
entry once; every voter ends in the same state, and revisions still name one value per key."""

from __future__ import annotations

import asyncio

import pytest

from consensus.errors import LocalProtocolError
from consensus.kv import KvStore
from consensus.kv_types import Put, encode_command
from consensus.messages import Entry, EntryKind
from moltmesh.raft.kvservice import CasMismatch
from moltmesh.raft.runtime import raft_config
from tests.raft.localnet import eventually, three_voters_led_by_a


async def test_commands_proposed_together_share_an_entry_applied_undecoded_by_the_leader(
    tmp_path, monkeypatch
) -> None:
    async with three_voters_led_by_a(tmp_path) as net:
        a = net.nodes["a"]
        decoded: dict[int, int] = {}  # id(store) -> entries it decoded
        inner, inner_quietly = KvStore.apply, KvStore.apply_entry_quietly

        def counting(store: KvStore, index: int, data: bytes):  # type: ignore[no-untyped-def]
            decoded[id(store)] = decoded.get(id(store), 0) + 1
            return inner(store, index, data)

        def counting_quietly(store: KvStore, e: Entry) -> int:  # a follower's apply
            if e.kind is EntryKind.NORMAL and e.data:
                decoded[id(store)] = decoded.get(id(store), 0) + 1
            return inner_quietly(store, e)

        monkeypatch.setattr(KvStore, "apply", counting)
        monkeypatch.setattr(KvStore, "apply_entry_quietly", counting_quietly)
        entries_before = a.driver.stats.proposal_entries
        first = a.driver.node.last_index + 1
        writes = await asyncio.gather(*(a.kv.put(f"k{i}", f"v{i}".encode()) for i in range(40)))
        assert a.driver.stats.proposal_entries - entries_before < 40  # they shared entries
        assert len({w.revision for w in writes}) < 40
        await a.kv.cas("k0", (await a.kv.get("k0"))[0].mod_revision, b"new")  # type: ignore[union-attr]
        await a.kv.delete("k1")
        last = a.driver.node.last_index
        await eventually(lambda: all(n.driver.kv.applied_index >= last for n in net.nodes.values()),
                         10, "every voter applied every write")  # fmt: skip
        assert decoded.get(id(a.driver.kv), 0) == 0
        with_commands = a.driver.stats.proposal_entries - entries_before
        for name in ("b", "c"):  # one decode per entry that carries commands, however many
            assert decoded[id(net.nodes[name].driver.kv)] == with_commands <= last - first + 1
        states = [n.driver.kv.snapshot() for n in net.nodes.values()]
        assert states[0] == states[1] == states[2]
        for i, w in enumerate(writes[2:], start=2):
            kv = (await a.kv.get(f"k{i}"))[0]
            assert kv is not None and kv.mod_revision == w.revision and kv.value == b"v%d" % i


async def test_writes_to_one_key_never_share_an_entry(tmp_path) -> None:
    """Two changes of one key in one entry would share a mod revision, so a CAS on it could
    not tell them apart: concurrent writes to a key get revisions of their own, and of
    concurrent CAS expecting the same revision exactly one wins."""
    async with three_voters_led_by_a(tmp_path) as net:
        a = net.nodes["a"]
        writes = await asyncio.gather(*(a.kv.put("x", b"%d" % i) for i in range(10)),
                                      *(a.kv.put(f"y{i}", b"") for i in range(10)))  # fmt: skip
        x_revisions = [w.revision for w in writes[:10]]
        assert len(set(x_revisions)) == 10
        kv = (await a.kv.get("x"))[0]
        assert kv is not None and kv.version == 10
        assert kv.mod_revision == max(x_revisions)
        assert kv.value == b"%d" % x_revisions.index(max(x_revisions))
        results = await asyncio.gather(*(a.kv.cas("x", kv.mod_revision, b"c%d" % i)
                                         for i in range(8)), return_exceptions=True)  # fmt: skip
        won = [r for r in results if not isinstance(r, BaseException)]
        assert len(won) == 1 and all(isinstance(r, CasMismatch) for r in results if r not in won)


async def test_a_write_queued_when_leadership_moves_is_forwarded_to_the_new_leader(
    tmp_path,
) -> None:
    """A put waits in the leader's queue for the next turn of its Ready loop; a leadership
    transfer started meanwhile keeps it out of the log (``NotLeader``), and the write goes to
    the new leader instead of failing or being lost."""
    async with three_voters_led_by_a(tmp_path) as net:
        a = net.nodes["a"]
        entries = a.driver.stats.proposal_entries
        put = asyncio.create_task(a.kv.put("k", b"moved"))
        await asyncio.sleep(0)  # the put's first step runs (FIFO): queued, a's loop not woken yet
        assert a.driver._queued
        a.driver.transfer_leadership("b")  # before a's loop puts the queue into its log
        result = await asyncio.wait_for(put, 10)
        assert net.leader() is net.nodes["b"]
        assert a.driver.stats.proposal_entries == entries  # it never entered a's log
        assert a.driver.stats.proposals_failed == 1
        kv = (await net.nodes["b"].kv.get("k"))[0]
        assert kv is not None and kv.value == b"moved" and kv.mod_revision == result.revision


async def test_a_batch_never_outgrows_a_raft_message_so_a_small_frame_cap_still_commits(
    tmp_path,
) -> None:
    """With a 64 KiB mesh frame (a Raft message is at most a quarter of it), 100 concurrent
    1 kB puts must not become one entry too large to send: each batch fits a message."""
    frame = 64 * 1024
    async with three_voters_led_by_a(tmp_path, raft_config("local", frame)) as net:
        for n in net.nodes.values():
            n.kv.set_frame_limit(frame)
        a = net.nodes["a"]
        entries = a.driver.stats.proposal_entries
        puts = [a.kv.put(f"k{i}", bytes(1000), timeout=5.0) for i in range(100)]
        await asyncio.wait_for(asyncio.gather(*puts), 20)  # all acknowledged
        assert 7 <= a.driver.stats.proposal_entries - entries < 100  # ≥ 100 kB / 16 KiB
        assert all(n.kv.stats.oversize_dropped == 0 for n in net.nodes.values())


async def test_a_proposal_that_is_not_bytes_fails_its_caller_not_the_raft_loop(tmp_path) -> None:
    async with three_voters_led_by_a(tmp_path) as net:
        a = net.nodes["a"]
        with pytest.raises(LocalProtocolError):
            await a.kv.propose(bytearray(encode_command(Put("k", b"v"))), 1.0)  # type: ignore[arg-type]
        await a.kv.put("k", b"after")  # the loop still runs
        assert (await a.kv.get("k"))[0].value == b"after"  # type: ignore[union-attr]
