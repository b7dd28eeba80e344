"""Requests between nodes time out from one deadline heap (no timer per call) and the RAFT body
is built in one pass, byte for byte what the codec gives (issue 8, per-commit CPU)."""

from __future__ import annotations

import asyncio

import pytest

from consensus.kv_types import Put, encode_command
from consensus.raft import RaftConfig
from moltmesh.mesh.streams import Peer
from moltmesh.mesh.wire import Channel
from moltmesh.raft.driver import RaftDriver
from moltmesh.raft.kvservice import ClusterKv
from moltmesh.raft.proto import (
    KvOp,
    KvReply,
    KvRequest,
    KvStatus,
    RaftBatch,
    decode,
    encode,
    encode_batch,
)
from moltmesh.raft.wal import DiskStorage


def kv_service(tmp_path) -> tuple[ClusterKv, list[tuple[str, bytes]]]:  # type: ignore[no-untyped-def]
    storage = DiskStorage.open(tmp_path / "raft", fsync=False)
    driver = RaftDriver("a", storage, RaftConfig.local(), lambda dst, msgs: None, seed=1)
    sent: list[tuple[str, bytes]] = []

    def send(dst: str, channel: Channel, body: bytes) -> bool:
        sent.append((dst, body))
        return True

    return ClusterKv(driver, send, lambda: ["b"], max_frame_bytes=1 << 20), sent


async def test_calls_time_out_in_deadline_order_and_answered_ones_return(tmp_path) -> None:
    kv, sent = kv_service(tmp_path)
    req = KvRequest(0, KvOp.READ, key="k", timeout_ms=1000)
    slow = asyncio.create_task(kv.call("b", req, 0.2))
    fast = asyncio.create_task(kv.call("b", req, 0.05))
    answered = asyncio.create_task(kv.call("b", req, 0.1))
    await asyncio.sleep(0)
    ids = [decode(body).id for _, body in sent]  # type: ignore[attr-defined]
    await kv.on_kv(Peer("b", "x"), _envelope(encode(KvReply(ids[2], KvStatus.OK, revision=7))))
    assert (await answered).revision == 7
    with pytest.raises(TimeoutError):
        await fast
    assert not slow.done()  # the later deadline still waits
    with pytest.raises(TimeoutError):
        await slow
    assert not kv._calls
    await kv.stop()


def _envelope(body: bytes):  # type: ignore[no-untyped-def]
    from moltmesh.mesh.wire import Envelope

    return Envelope("m", Channel.KV, "b", body)


@pytest.mark.parametrize("sizes", [(), (0,), (1, 31, 32, 255, 256, 65535, 65536, 70000)])
def test_a_batch_built_in_one_pass_is_what_the_codec_encodes(sizes: tuple[int, ...]) -> None:
    msgs = tuple(bytes([i % 251]) * n for i, n in enumerate(sizes))
    body = encode_batch(list(msgs))
    assert body == encode(RaftBatch(msgs))
    assert decode(body) == RaftBatch(msgs)


async def test_a_watch_woken_by_other_changes_still_returns_its_prefix_change(tmp_path) -> None:
    """Each wake-up looks only at the changes since the last one (O(changes)), and nothing
    under the prefix is missed."""
    kv, _ = kv_service(tmp_path)
    store = kv.follow_kv  # not a member: the followed copy is the local one
    watcher = asyncio.create_task(kv.watch("mesh/", 1, timeout=5))

    async def apply(index: int, key: str) -> None:
        store.apply(index, encode_command(Put(key, b"x")))
        ev, kv.follow.changed = kv.follow.changed, asyncio.Event()
        ev.set()
        await asyncio.sleep(0)

    for i in range(1, 50):
        await apply(i, f"other/{i}")
    assert not watcher.done()
    await apply(50, "mesh/config")
    await apply(51, "mesh/revocations")  # may land in the same answer or after it
    events, revision = await watcher
    assert [e.key for e in events][:1] == ["mesh/config"] and events[0].revision == 50
    assert revision >= 50
    await kv.stop()


async def test_a_reply_from_another_peer_than_the_one_called_is_ignored(tmp_path) -> None:
    kv, sent = kv_service(tmp_path)
    call = asyncio.create_task(kv.call("b", KvRequest(0, KvOp.READ, key="k"), 0.2))
    await asyncio.sleep(0)
    rid = decode(sent[0][1]).id  # type: ignore[attr-defined]
    await kv.on_kv(Peer("c", "x"), _envelope(encode(KvReply(rid, KvStatus.OK, revision=7))))
    with pytest.raises(TimeoutError):
        await call
