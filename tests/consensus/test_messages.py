"""Raft's wire records: every type round-trips; bad frames raise DecodeError only."""

from __future__ import annotations

import dataclasses

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.errors import DecodeError
from consensus.messages import (
    MESSAGE_TYPES,
    RAFT_CODEC,
    AppendEntries,
    AppendResponse,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    PreVoteRequest,
    PreVoteResponse,
    RaftMsgType,
    ReadIndexRequest,
    ReadIndexResponse,
    Snapshot,
    SnapshotMeta,
    SnapshotProgress,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
    decode,
    encode,
)

u64 = st.integers(0, 2**64 - 1)
ids = st.text(min_size=1, max_size=12)
entries = st.builds(Entry, u64, u64, st.sampled_from(EntryKind), st.binary(max_size=64))
conf_states = st.builds(
    ConfState, st.lists(ids, max_size=5).map(tuple), st.lists(ids, max_size=3).map(tuple)
)
snapshot_metas = st.builds(SnapshotMeta, u64, u64, conf_states)
snapshots = st.builds(Snapshot, snapshot_metas, st.binary(max_size=64))

STRATEGIES = {
    PreVoteRequest: st.builds(PreVoteRequest, ids, ids, u64, u64, u64),
    PreVoteResponse: st.builds(PreVoteResponse, ids, ids, u64, st.booleans()),
    VoteRequest: st.builds(VoteRequest, ids, ids, u64, u64, u64, st.booleans()),
    VoteResponse: st.builds(VoteResponse, ids, ids, u64, st.booleans()),
    AppendEntries: st.builds(
        AppendEntries, ids, ids, u64, u64, u64, st.lists(entries, max_size=5).map(tuple), u64
    ),
    AppendResponse: st.builds(AppendResponse, ids, ids, u64, u64, st.booleans(), u64, u64),
    Heartbeat: st.builds(Heartbeat, ids, ids, u64, u64, st.binary(max_size=16)),
    HeartbeatResponse: st.builds(HeartbeatResponse, ids, ids, u64, st.binary(max_size=16)),
    Entry: entries,
    HardState: st.builds(HardState, u64, st.none() | ids, u64),
    ConfState: conf_states,
    ConfChange: st.builds(ConfChange, st.sampled_from(ConfChangeType), ids),
    SnapshotMeta: snapshot_metas,
    Snapshot: snapshots,
    InstallSnapshot: st.builds(InstallSnapshot, ids, ids, u64, snapshots, u64, st.booleans()),
    SnapshotProgress: st.builds(SnapshotProgress, ids, ids, u64, u64, u64),
    TimeoutNow: st.builds(TimeoutNow, ids, ids, u64),
    ReadIndexRequest: st.builds(ReadIndexRequest, ids, ids, u64, st.binary(max_size=16)),
    ReadIndexResponse: st.builds(
        ReadIndexResponse, ids, ids, u64, st.binary(max_size=16), u64, st.booleans()
    ),
}
any_record = st.one_of(*STRATEGIES.values())


def test_every_registered_type_has_a_strategy_and_an_enum_value() -> None:
    registered = RAFT_CODEC.message_types
    assert set(registered.values()) == set(STRATEGIES)
    assert set(registered) == {int(t) for t in RaftMsgType}
    assert set(MESSAGE_TYPES) <= set(STRATEGIES)


def test_type_numbers_are_the_protocol() -> None:
    # Append-only: these numbers are on the wire and on disk. Changing one breaks peers.
    assert {t.name: int(t) for t in RaftMsgType} == {
        "PRE_VOTE": 1,
        "PRE_VOTE_RESPONSE": 2,
        "VOTE": 3,
        "VOTE_RESPONSE": 4,
        "APPEND": 5,
        "APPEND_RESPONSE": 6,
        "HEARTBEAT": 7,
        "HEARTBEAT_RESPONSE": 8,
        "INSTALL_SNAPSHOT": 9,
        "TIMEOUT_NOW": 10,
        "READ_INDEX": 11,
        "READ_INDEX_RESPONSE": 12,
        "SNAPSHOT_PROGRESS": 13,
        "ENTRY": 64,
        "HARD_STATE": 65,
        "CONF_STATE": 66,
        "CONF_CHANGE": 67,
        "SNAPSHOT_META": 68,
        "SNAPSHOT": 69,
    }
    assert {k.name: int(k) for k in EntryKind} == {"NORMAL": 0, "NOOP": 1, "CONFIG": 2}
    assert {k.name: int(k) for k in ConfChangeType} == {
        "ADD_VOTER": 0,
        "REMOVE_VOTER": 1,
        "ADD_LEARNER": 2,
        "PROMOTE_LEARNER": 3,
        "REMOVE_LEARNER": 4,
    }


@settings(max_examples=150, deadline=None)
@given(any_record)
def test_every_message_type_round_trips(msg: object) -> None:
    frame = encode(msg)
    assert frame[0] == RAFT_CODEC.type_id(type(msg))
    assert decode(frame) == msg


def test_messages_are_frozen_and_slotted() -> None:
    msg = VoteResponse("a", "b", 1, False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        msg.term = 2  # type: ignore[misc]
    assert not hasattr(msg, "__dict__")


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_decode_error(data: bytes) -> None:
    try:
        decode(data)
    except DecodeError as exc:
        assert exc.reason


@settings(max_examples=100, deadline=None)
@given(any_record, st.data())
def test_truncated_frames_raise_decode_error(msg: object, data: st.DataObject) -> None:
    frame = encode(msg)
    cut = data.draw(st.integers(0, len(frame) - 1))
    with pytest.raises(DecodeError):
        decode(frame[:cut])


@settings(max_examples=100, deadline=None)
@given(any_record, st.data())
def test_a_field_of_the_wrong_type_raises_decode_error(msg: object, data: st.DataObject) -> None:
    frame = encode(msg)
    body = list(msgpack.unpackb(frame[1:]))
    pos = data.draw(st.integers(0, len(body) - 1))
    wrong = data.draw(st.sampled_from([-1, -(2**63), 1.5, "s", b"b", [1, 2, 3], {"k": 1}, True]))
    if type(wrong) is type(body[pos]) and not isinstance(wrong, int | float):
        return
    body[pos] = wrong
    try:
        decoded = decode(frame[:1] + msgpack.packb(body, use_bin_type=True))
    except DecodeError:
        return
    # Only values that are valid for the field may get through (e.g. True for a bool field).
    assert encode(decoded)


def test_oversized_frame_is_rejected() -> None:
    big = b"\x05" + b"\x00" * (RAFT_CODEC.max_size + 1)
    with pytest.raises(DecodeError, match="limit"):
        decode(big)


def test_negative_terms_and_unknown_entry_kinds_are_rejected() -> None:
    with pytest.raises(DecodeError):
        decode(b"\x04" + msgpack.packb(["a", "b", -1, False]))
    with pytest.raises(DecodeError):
        decode(b"\x40" + msgpack.packb([1, 1, 7, b""]))
