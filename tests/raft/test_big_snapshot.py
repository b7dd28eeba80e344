"""A KV snapshot larger than the 8 MiB mesh frame cap reaches a lagging voter (Raft
InstallSnapshot) and a non-voting follower (the KV follow stream) in chunks that each fit one
frame, checked whole before it is installed; a corrupt or cut-short chunk stream is refused
and counted, then sent again (issue 8).

The in-process group of ``tests.raft.localnet`` runs the real driver, durable log and KV
service; its links here refuse any envelope larger than the mesh's frame limit, as the mesh's
streams do, and can tamper with what passes.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable

import pytest

from consensus.messages import InstallSnapshot
from consensus.messages import decode as decode_raft
from consensus.messages import encode as encode_raft
from moltmesh.mesh.wire import MAX_FRAME_BYTES, Channel, Envelope, encode_envelope
from moltmesh.raft.kvservice import ReplyTooLarge
from moltmesh.raft.proto import KvReply, RaftBatch, decode, encode, split_batches
from tests.raft.localnet import LocalNet, LocalNode, eventually

pytestmark = pytest.mark.asyncio

VALUES = 130  # x 64 KiB: the snapshot is larger than one 8 MiB frame
VALUE = 64 * 1024
Tamper = Callable[[str, str, Channel, bytes], bytes]


def value(i: int) -> bytes:
    return hashlib.sha256(b"big/%d" % i).digest() * (VALUE // 32)


class FramedNet(LocalNet):
    """LocalNet whose links drop envelopes over ``frame`` bytes (as the mesh would) and pass
    every body through ``tamper`` when set; ``largest`` is the largest envelope offered."""

    def __init__(self, *args: object, frame: int = MAX_FRAME_BYTES, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.frame = frame
        self.largest = 0
        self.oversize = 0
        self.tamper: Tamper | None = None

    def sender(self, src: str):  # type: ignore[no-untyped-def]
        inner = super().sender(src)

        def send(dst: str, channel: Channel, body: bytes) -> bool:
            size = len(encode_envelope(Envelope("m", channel, src, body), max_size=2**31))
            self.largest = max(self.largest, size)
            if size > self.frame:
                self.oversize += 1
                return True  # refused by the receiving stream
            if self.tamper is not None:
                body = self.tamper(src, dst, channel, body)
            return inner(dst, channel, body)

        return send


async def fill(net: FramedNet, count: int = VALUES) -> int:
    """Write ``count`` values (16 at a time) through node a; returns the last revision."""
    kv = net.nodes["a"].kv
    last = 0
    for lo in range(0, count, 16):
        done = await asyncio.gather(
            *(kv.put(f"big/{i:04d}", value(i), timeout=30) for i in range(lo, min(lo + 16, count)))
        )
        last = max(last, *(r.revision for r in done))
    return last


async def settled(net: FramedNet) -> None:
    """Wait until no node is writing a snapshot (they are written off the Ready loop): the
    snapshots a test then looks at, or sends, are the ones its writes made."""
    await eventually(lambda: not any(n.driver.compactor.busy for n in net.nodes.values()),
                     30, "snapshots written")  # fmt: skip


async def roles(net: FramedNet) -> tuple[LocalNode, LocalNode]:
    """Once 3 voters are in: a voter that does not lead, and the node following by stream."""
    await eventually(
        lambda: len(net.nodes["a"].driver.node.voters) == 3 and net.leader() is not None,
        what="3 voters and a leader",
    )
    leader = net.leader()
    voters = net.nodes["a"].driver.node.voters
    lagging = next(n for n in net.nodes.values() if n.id in voters and n is not leader)
    follower = next(n for n in net.nodes.values() if n.id not in voters)
    assert not follower.driver.is_member()
    return lagging, follower


def cut(net: FramedNet, node: str) -> None:
    net.cut |= {frozenset((node, other)) for other in net.nodes if other != node}


def heal(net: FramedNet, node: str) -> None:
    net.cut -= {frozenset((node, other)) for other in net.nodes if other != node}


def flip_once(kind: type, when: Callable[[object], bool], hits: list[object]) -> Tamper:
    """A tamper hook flipping one byte in the first message of ``kind`` that ``when`` picks."""

    def tamper(src: str, dst: str, channel: Channel, body: bytes) -> bytes:
        if hits:
            return body
        msg = decode(body)
        if kind is KvReply and isinstance(msg, KvReply) and when(msg):
            chunk = bytearray(msg.snapshot)
            chunk[len(chunk) // 2] ^= 0x01
            hits.append(msg)
            return encode(_replace(msg, snapshot=bytes(chunk)))
        if kind is InstallSnapshot and isinstance(msg, RaftBatch):
            out = []
            for raw in msg.messages:
                m = decode_raft(raw)
                if isinstance(m, InstallSnapshot) and not hits and when(m):
                    data = bytearray(m.snapshot.data)
                    data[len(data) // 2] ^= 0x01
                    hits.append(m)
                    snap = type(m.snapshot)(m.snapshot.meta, bytes(data))
                    m = InstallSnapshot(m.src, m.dst, m.term, snap, m.offset, m.done)
                out.append(encode_raft(m))
            return encode(RaftBatch(tuple(out)))
        return body

    return tamper


def _replace(msg: KvReply, **changes: object) -> KvReply:
    import dataclasses

    return dataclasses.replace(msg, **changes)


async def test_lagging_voter_and_follower_catch_up_through_a_snapshot_over_the_frame_cap(
    tmp_path,
):
    net = FramedNet(tmp_path, ["a", "b", "c", "d"], snapshot_entries=64, max_learners=0)
    await net.start()
    try:
        a = net.nodes["a"]
        lagging, follower = await roles(net)
        cut(net, lagging.id)
        cut(net, follower.id)
        last = await fill(net)
        await settled(net)
        snap = a.driver.storage.snapshot()
        assert len(snap.data) > MAX_FRAME_BYTES  # the point: no single frame could carry it
        assert a.driver.storage.first_index() > lagging.driver.kv.applied_index + 1
        heal(net, lagging.id)
        heal(net, follower.id)
        await eventually(lambda: lagging.driver.kv.revision >= last, 30, "the voter caught up")
        await eventually(lambda: follower.kv.follow_kv.revision >= last, 30, "follower caught up")
        for node in (lagging, follower):
            got = node.kv.local.get(f"big/{VALUES - 1:04d}")
            assert got is not None and got.value == value(VALUES - 1)
            assert list(node.kv.local.items()) == list(a.kv.local.items())
        assert lagging.kv.transfer_status()["raft_snapshots_installed"] >= 1
        st = follower.kv.transfer_status()
        assert st["snapshots_installed"] >= 1 and st["snapshot_chunks"] >= 3
        assert st["snapshots_refused"] == 0
        assert net.oversize == 0 and net.largest <= MAX_FRAME_BYTES
        assert all(n.kv.stats.oversize_dropped == 0 for n in net.nodes.values())
    finally:
        await net.stop()


async def test_corrupt_chunks_are_refused_counted_and_sent_again(tmp_path):
    net = FramedNet(tmp_path, ["a", "b", "c", "d"], snapshot_entries=16, max_learners=0,
                    frame=1024 * 1024)  # fmt: skip
    await net.start()
    try:
        for n in net.nodes.values():
            n.kv.set_frame_limit(net.frame)
        lagging, follower = await roles(net)
        cut(net, lagging.id)
        cut(net, follower.id)
        last = await fill(net, 40)  # 2.5 MiB: the frame limit is 1 MiB here
        await settled(net)  # a newer snapshot would restart the transfer the test tampers with
        raft_hits: list[object] = []
        kv_hits: list[object] = []
        raft_tamper = flip_once(InstallSnapshot, lambda m: m.offset > 0, raft_hits)  # type: ignore[attr-defined]
        kv_tamper = flip_once(KvReply, lambda m: m.snapshot_offset > 0, kv_hits)  # type: ignore[attr-defined]

        def tamper(src: str, dst: str, channel: Channel, body: bytes) -> bytes:
            if dst == lagging.id and channel is Channel.RAFT:
                return raft_tamper(src, dst, channel, body)
            if dst == follower.id and channel is Channel.KV:
                return kv_tamper(src, dst, channel, body)
            return body

        net.tamper = tamper
        heal(net, lagging.id)
        heal(net, follower.id)
        await eventually(lambda: lagging.driver.kv.revision >= last, 30, "the voter caught up")
        await eventually(lambda: follower.kv.follow_kv.revision >= last, 30, "follower caught up")
        assert raft_hits and kv_hits  # one chunk of each stream was corrupted on the way
        rs = lagging.kv.transfer_status()
        assert rs["raft_snapshots_refused"] == 1 and "SHA-256" in rs["raft_last_refusal"]
        assert rs["raft_snapshots_installed"] >= 1
        fs = follower.kv.transfer_status()
        assert fs["snapshots_refused"] == 1 and "SHA-256" in fs["last_refusal"]
        assert fs["snapshots_installed"] >= 1
        for node in (lagging, follower):
            got = node.kv.local.get("big/0039")
            assert got is not None and got.value == value(39)
        assert net.oversize == 0 and net.largest <= net.frame
    finally:
        await net.stop()


async def test_a_follow_stream_cut_short_is_refused(tmp_path):
    net = FramedNet(tmp_path, ["a", "b", "c", "d"], snapshot_entries=8, max_learners=0)
    await net.start()
    try:
        a = net.nodes["a"]
        _, follower = await roles(net)
        for n in net.nodes.values():
            n.kv.set_frame_limit(64 * 1024)
        cut(net, follower.id)
        for i in range(12):
            await a.kv.put(f"k{i}", value(i)[:20_000])
        behind = follower.kv.follow_kv.applied_index
        members = [n for n in net.nodes.values() if n is not follower]
        await eventually(  # a snapshot after the writes, not only one taken before them
            lambda: all(n.driver.node.first_index > behind + 1 for n in members), 30,
            "the members' logs compacted past the follower",
        )  # fmt: skip
        await settled(net)  # so the follower needs the snapshot
        hits: list[object] = []

        def truncate_once(src: str, dst: str, channel: Channel, body: bytes) -> bytes:
            if dst != follower.id or channel is not Channel.KV or hits:
                return body
            msg = decode(body)
            if isinstance(msg, KvReply) and msg.snapshot_offset > 0:
                hits.append(msg)
                return encode(_replace(msg, snapshot=b""))  # the stream ends early
            return body

        net.tamper = truncate_once
        heal(net, follower.id)
        await eventually(lambda: follower.kv.follow_kv.get("k11") is not None, 30, "caught up")
        st = follower.kv.transfer_status()
        assert hits and st["snapshots_refused"] == 1 and "truncated" in st["last_refusal"]
        assert st["snapshots_installed"] >= 1
        # An answer that cannot fit one frame is refused as such, not lost.
        with pytest.raises(ReplyTooLarge, match="more than one frame"):
            await follower.kv.list("k")
        assert len(await follower.kv.list("k1")) == 2  # a narrower prefix fits
    finally:
        await net.stop()


async def test_raft_messages_for_one_peer_are_split_to_fit_frames():
    msgs = [bytes([i]) * 30_000 for i in range(10)]
    batches, too_big = split_batches([*msgs, b"x" * 70_000], 64 * 1024)
    assert too_big == [70_000]
    assert [m for b in batches for m in b.messages] == msgs  # all, in order
    assert all(len(encode(b)) <= 64 * 1024 for b in batches) and len(batches) == 5


async def test_a_follower_with_a_small_frame_limit_still_gets_entries_in_pieces(tmp_path):
    net = FramedNet(tmp_path, ["a", "b", "c", "d"], max_learners=0, frame=64 * 1024)
    await net.start()
    try:
        for n in net.nodes.values():
            n.kv.set_frame_limit(net.frame)
        a = net.nodes["a"]
        lagging, follower = await roles(net)
        cut(net, lagging.id)
        cut(net, follower.id)
        for i in range(10):  # 10 x 20 KB entries: more than one frame to send in a batch
            await a.kv.put(f"e{i}", value(i)[:20_000])
        heal(net, lagging.id)
        heal(net, follower.id)
        for node in (lagging, follower):
            await eventually(lambda node=node: node.kv.local.get("e9") is not None, 30, "caught up")
        assert net.oversize == 0 and net.largest <= net.frame
    finally:
        await net.stop()
