"""Snapshots larger than a mesh frame travel in checked chunks (issue 8).

The KV seals its snapshots (length + SHA-256); the Raft receiver puts chunks back together and
refuses a stream that is cut short, runs long or is corrupt, so nothing unchecked is installed;
the follow stream's ``SnapshotDownload`` does the same with the size and digest it is told.
"""

from __future__ import annotations

import hashlib

import msgpack
import pytest

from consensus.kv import KvStore
from consensus.kv_types import KV_SNAPSHOT_CODEC, Put, encode_command
from consensus.messages import (
    RAFT_CODEC,
    RAFT_MAX_FRAME,
    ConfState,
    Entry,
    InstallSnapshot,
    Snapshot,
    SnapshotMeta,
    SnapshotProgress,
)
from consensus.raft import Role
from consensus.raft_snapshot import (
    SEAL_BYTES,
    SnapshotCorruptError,
    SnapshotDownload,
    SnapshotReceiver,
    seal,
    snapshot_chunk,
    unseal,
)
from tests.consensus.raft_net import Net, cfg

VALUE = 64 * 1024
CHUNK = 1024 * 1024


def big_kv(values: int = 130, seed: int = 7) -> KvStore:
    """A store whose snapshot is larger than the 8 MiB frame cap (130 x 64 KiB values)."""
    store = KvStore()
    for i in range(values):
        value = hashlib.sha256(b"%d/%d" % (seed, i)).digest() * (VALUE // 32)
        store.apply(i + 1, encode_command(Put(f"blob/{i:04d}", value)))
    return store


@pytest.fixture(scope="module")
def big_snapshot() -> Snapshot:
    data = big_kv().snapshot()
    assert len(data) > RAFT_MAX_FRAME  # the point: it cannot travel in one frame
    return Snapshot(SnapshotMeta(130, 2, ConfState(("a", "b", "c"))), data)


def chunks_of(snap: Snapshot, size: int = CHUNK) -> list[InstallSnapshot]:
    out = [snapshot_chunk("a", "b", 2, snap, 0, size)]
    while not out[-1].done:
        last = out[-1]
        out.append(snapshot_chunk("a", "b", 2, snap, last.offset + len(last.snapshot.data), size))
    return out


def with_data(msg: InstallSnapshot, data: bytes, done: bool | None = None) -> InstallSnapshot:
    snap = Snapshot(msg.snapshot.meta, data)
    return InstallSnapshot(msg.src, msg.dst, msg.term, snap, msg.offset,
                           msg.done if done is None else done)  # fmt: skip


# --- the sealed format ---------------------------------------------------------------------------


def test_seal_round_trips_and_names_what_is_wrong() -> None:
    payload = b"state" * 1000
    sealed = seal(payload)
    assert len(sealed) == SEAL_BYTES + len(payload) and bytes(unseal(sealed)) == payload
    with pytest.raises(SnapshotCorruptError, match="truncated: 4999 bytes, header says 5000"):
        unseal(sealed[:-1])
    with pytest.raises(SnapshotCorruptError, match="too long"):
        unseal(sealed + b"x")
    flipped = bytearray(sealed)
    flipped[SEAL_BYTES + 2500] ^= 1
    with pytest.raises(SnapshotCorruptError, match="SHA-256"):
        unseal(bytes(flipped))
    with pytest.raises(SnapshotCorruptError, match="not sealed"):
        unseal(payload)


def test_kv_snapshots_are_sealed_and_restore_checks_them() -> None:
    store = big_kv(values=3)
    data = store.snapshot()
    assert KvStore.restore(data).snapshot() == data
    bad = bytearray(data)
    bad[-10] ^= 0xFF
    with pytest.raises(SnapshotCorruptError):
        KvStore.restore(bytes(bad))
    # A data directory from before sealing holds the bare encoding: still restored.
    legacy = bytes(unseal(data))
    assert KV_SNAPSHOT_CODEC.decode(legacy) is not None
    assert KvStore.restore(legacy).snapshot() == data


# --- the Raft receiver ------------------------------------------------------------------------


def test_a_snapshot_over_the_frame_cap_arrives_in_chunks_that_each_fit(
    big_snapshot: Snapshot,
) -> None:
    msgs = chunks_of(big_snapshot)
    assert len(msgs) == -(-len(big_snapshot.data) // CHUNK) >= 9
    assert all(len(RAFT_CODEC.encode(m)) <= CHUNK + 1024 for m in msgs)  # each fits a frame
    rx = SnapshotReceiver()
    answers = [rx.receive(m) for m in msgs]
    assert answers[:-1] == [m.offset + len(m.snapshot.data) for m in msgs[:-1]]
    assert answers[-1] == big_snapshot and (rx.installed, rx.refused) == (1, 0)
    assert KvStore.restore(answers[-1].data).get("blob/0129") is not None


def test_a_corrupt_chunk_is_refused_counted_and_the_stream_starts_over(
    big_snapshot: Snapshot,
) -> None:
    msgs = chunks_of(big_snapshot)
    rx = SnapshotReceiver()
    bad = bytearray(msgs[4].snapshot.data)
    bad[100] ^= 0x01
    stream = [*msgs[:4], with_data(msgs[4], bytes(bad)), *msgs[5:]]
    answers = [rx.receive(m) for m in stream]
    assert answers[-1] == 0  # refused: asks for the snapshot again from the start
    assert all(isinstance(a, int) for a in answers)  # nothing was handed on to install
    assert rx.refused == 1 and rx.installed == 0
    assert "SHA-256" in rx.last_error and "index 130" in rx.last_error
    # The leader sends it again from offset 0, intact this time: installed.
    assert [rx.receive(m) for m in msgs][-1] == big_snapshot
    assert (rx.installed, rx.refused) == (1, 1)


def test_a_truncated_stream_is_refused(big_snapshot: Snapshot) -> None:
    msgs = chunks_of(big_snapshot)
    rx = SnapshotReceiver()
    for m in msgs[:-2]:
        rx.receive(m)
    assert rx.receive(with_data(msgs[-2], msgs[-2].snapshot.data, done=True)) == 0
    assert rx.refused == 1 and "truncated" in rx.last_error


def test_a_stream_running_past_its_declared_length_is_refused_at_once(
    big_snapshot: Snapshot,
) -> None:
    msgs = chunks_of(big_snapshot)
    rx = SnapshotReceiver()
    for m in msgs[:-1]:
        rx.receive(m)
    extra = with_data(msgs[-1], msgs[-1].snapshot.data + b"junk", done=False)
    assert rx.receive(extra) == 0 and rx.refused == 1 and "header says" in rx.last_error


def test_unsealed_data_is_passed_through_unchecked() -> None:
    snap = Snapshot(SnapshotMeta(3, 1, ConfState(("a",))), b"opaque state" * 50)
    rx = SnapshotReceiver()
    got = [rx.receive(m) for m in chunks_of(snap, 100)]
    assert got[-1] == snap and rx.refused == 0


def test_a_receiver_that_requires_a_seal_refuses_a_damaged_header(
    big_snapshot: Snapshot,
) -> None:
    msgs = chunks_of(big_snapshot)
    head = bytearray(msgs[0].snapshot.data)
    head[0] ^= 0x20  # the magic no longer reads as sealed
    rx = SnapshotReceiver(require_sealed=True)
    assert rx.receive(with_data(msgs[0], bytes(head))) == 0  # refused at the first chunk
    assert rx.refused == 1 and "not sealed" in rx.last_error
    assert [rx.receive(m) for m in msgs][-1] == big_snapshot  # the intact stream passes
    tiny = Snapshot(SnapshotMeta(1, 1, ConfState(("a",))), b"abc")  # shorter than the magic
    assert SnapshotReceiver(require_sealed=True).receive(chunks_of(tiny)[0]) == 0


class SealedNet(Net):
    """The Raft test net, with sealed snapshots (as the KV takes them)."""

    def compact(self, node_id: str, keep: int = 0) -> Snapshot:
        self.flush(node_id)
        node = self.nodes[node_id]
        rows = [[e.index, e.term, int(e.kind), e.data] for e in self.applied[node_id]]
        st = self.storages[node_id]
        snap = st.create_snapshot(node.applied_index, node.conf_state, seal(msgpack.packb(rows)))
        st.compact(max(node.applied_index - keep, st.first_index() - 1))
        return snap

    def _restore(self, node_id: str, snap: Snapshot) -> None:
        super()._restore(node_id, Snapshot(snap.meta, bytes(unseal(snap.data))))


def test_a_lagging_follower_catches_up_through_a_corrupted_then_clean_transfer() -> None:
    seed = 31
    net = SealedNet(["a", "b", "c"], seed=seed, config=cfg(pre_vote=False, check_quorum=False))
    net.elect("a")
    net.isolate("c")
    for i in range(130):  # > 8 MiB of state
        net["a"].propose(hashlib.sha256(b"%d" % i).digest() * (VALUE // 32), net.now)
        net.deliver()
    size = len(net.compact("a").data)
    assert size > RAFT_MAX_FRAME, seed
    net.heal()
    sent: list[InstallSnapshot] = []
    progress: list[SnapshotProgress] = []

    def corrupt_once(m: object) -> object:
        if isinstance(m, SnapshotProgress):
            progress.append(m)
        if not isinstance(m, InstallSnapshot):
            return m
        sent.append(m)
        if m.offset and len(sent) == 3:  # the third chunk of the first pass
            data = bytearray(m.snapshot.data)
            data[7] ^= 0x80
            return with_data(m, bytes(data))
        return m

    net.rewrite = corrupt_once
    net.run_until(lambda: net.snapshots_installed["c"] == 1, limit=2_000_000)
    limit = net.config.max_bytes_per_msg
    assert all(len(m.snapshot.data) <= limit for m in sent), seed
    starts = [i for i, m in enumerate(sent) if m.offset == 0]
    assert len(starts) == 2, (seed, starts)  # the corrupt pass, then a clean one
    assert sent[starts[1] - 1].done  # the first pass was whole, and refused at its end
    assert any(p.offset == 0 for p in progress)  # the follower asked to start over
    assert net.applied_data("c") == net.applied_data("a"), seed
    assert net["c"].role is Role.FOLLOWER


def test_entries_shipped_after_the_snapshot_still_apply() -> None:
    store = big_kv(values=2)
    restored = KvStore.restore(store.snapshot())
    restored.apply_entry(Entry(3, 1, data=encode_command(Put("after", b"x"))))
    assert restored.get("after") is not None and restored.applied_index == 3


# --- the follow stream's download -------------------------------------------------------------


def download_of(data: bytes) -> SnapshotDownload:
    return SnapshotDownload(9, len(data), hashlib.sha256(data).digest())


def test_download_installs_only_the_whole_checked_snapshot() -> None:
    data = big_kv(values=20).snapshot()
    dl = download_of(data)
    pieces = [data[o : o + 100_000] for o in range(0, len(data), 100_000)]
    offset = 0
    for i, piece in enumerate(pieces):
        assert not dl.take(offset + 1, piece)  # not where we are: ignored
        done = dl.take(offset, piece)
        assert done == (i == len(pieces) - 1)
        offset += len(piece)
    assert bytes(dl.data) == data


def test_download_refuses_short_long_and_corrupt_streams() -> None:
    data = b"0123456789" * 1000
    dl = download_of(data)
    dl.take(0, data[:4000])
    with pytest.raises(SnapshotCorruptError, match="truncated: the stream ended at byte 4000"):
        dl.take(4000, b"")
    dl = download_of(data)
    with pytest.raises(SnapshotCorruptError, match="too long"):
        dl.take(0, data + b"!")
    dl = download_of(data)
    with pytest.raises(SnapshotCorruptError, match="SHA-256"):
        dl.take(0, data[:-1] + b"?")
    assert dl.same(9, len(data), hashlib.sha256(data).digest())
    assert not dl.same(10, len(data), hashlib.sha256(data).digest())
