"""Property tests of the SWIM wire codec: round trips, size bounds, hostile input."""

from __future__ import annotations

import contextlib
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.errors import DecodeError
from consensus.swim_messages import (
    SWIM_CODEC,
    Ack,
    Gossip,
    IndirectPing,
    MemberState,
    MemberStatus,
    Meta,
    Nack,
    Ping,
    PushPull,
    SwimMsgType,
    Update,
    UpdateKind,
    decode,
    encode,
    packet_base_size,
    push_pull_size,
    update_size,
)

ids = st.text(min_size=1, max_size=40)
u32 = st.integers(0, 2**32 - 1)
metas = st.builds(
    Meta,
    address=st.text(max_size=60),
    ports=st.lists(st.tuples(st.text(max_size=10), st.integers(0, 65535)), max_size=4).map(tuple),
    tier=st.sampled_from(["", "light", "standard", "heavy"]),
    cpu_load=st.integers(0, 255),
    mem_load=st.integers(0, 255),
    models=st.lists(st.text(max_size=20), max_size=4).map(tuple),
    links=st.lists(st.tuples(st.text(max_size=10), st.booleans()), max_size=3).map(tuple),
)
alive = st.builds(lambda n, i, v, m: Update(UpdateKind.ALIVE, n, i, n, v, m), ids, u32, u32, metas)
suspect_or_dead = st.builds(
    Update, st.sampled_from([UpdateKind.SUSPECT, UpdateKind.DEAD]), ids, u32, ids
)
updates = st.lists(st.one_of(alive, suspect_or_dead), max_size=8).map(tuple)
packets = st.one_of(
    st.builds(Ping, u32, ids, ids, ids, updates),
    st.builds(IndirectPing, u32, ids, ids, ids, ids, st.booleans(), updates),
    st.builds(Ack, u32, ids, updates),
    st.builds(Nack, u32, ids, updates),
    st.builds(Gossip, ids, updates),
)
states = st.builds(MemberState, ids, st.sampled_from(list(MemberStatus)), u32, u32, metas)
push_pulls = st.builds(
    PushPull, ids, ids, st.booleans(), st.booleans(), st.lists(states, max_size=6).map(tuple)
)


@settings(max_examples=80, deadline=None)
@given(st.one_of(packets, push_pulls))
def test_every_message_round_trips(msg: object) -> None:
    assert decode(encode(msg)) == msg  # type: ignore[arg-type]


@settings(max_examples=80, deadline=None)
@given(packets)
def test_base_size_and_update_sizes_bound_the_encoded_packet(msg: object) -> None:
    bare = replace(msg, updates=())  # type: ignore[type-var]
    extra = sum(update_size(u) for u in msg.updates)  # type: ignore[attr-defined]
    assert len(encode(msg)) <= packet_base_size(bare) + 2 + extra  # type: ignore[arg-type]


@settings(max_examples=80, deadline=None)
@given(push_pulls)
def test_push_pull_size_is_exact_without_encoding(msg: PushPull) -> None:
    assert push_pull_size(msg) == len(encode(msg))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_decode_of_arbitrary_bytes_raises_only_decode_error(data: bytes) -> None:
    try:
        decode(data)
    except DecodeError as exc:
        assert exc.reason


@settings(max_examples=80, deadline=None)
@given(packets, st.integers(1, 40), st.binary(min_size=1, max_size=4))
def test_decode_of_corrupted_frames_raises_only_decode_error(
    msg: object, cut: int, junk: bytes
) -> None:
    frame = encode(msg)  # type: ignore[arg-type]
    for bad in (frame[:-cut], frame + junk, bytes([frame[0] ^ 0x40]) + frame[1:]):
        with contextlib.suppress(DecodeError):
            decode(bad)


def test_type_ids_are_the_append_only_protocol() -> None:
    """The numbers are the protocol: changing one breaks every deployed node."""
    assert {t.name: int(t) for t in SwimMsgType} == {
        "PING": 1,
        "INDIRECT_PING": 2,
        "ACK": 3,
        "NACK": 4,
        "GOSSIP": 5,
        "PUSH_PULL": 6,
    }
    assert [int(k) for k in UpdateKind] == [1, 2, 3]
    assert [int(s) for s in MemberStatus] == [1, 2, 3, 4]
    assert SWIM_CODEC.message_types == {
        1: Ping,
        2: IndirectPing,
        3: Ack,
        4: Nack,
        5: Gossip,
        6: PushPull,
    }
    assert encode(Ack(7, "b"))[0] == SwimMsgType.ACK


def test_unknown_enum_value_is_a_decode_error() -> None:
    frame = bytearray(encode(Gossip("a", (Update(UpdateKind.DEAD, "b", 1, "a"),))))
    # the update kind is the first element of the update array: DEAD (3) -> 9
    idx = frame.index(bytes([0x96, 0x03]))
    frame[idx + 1] = 0x09
    with pytest.raises(DecodeError):
        decode(bytes(frame))


def test_meta_create_sorts_mappings() -> None:
    m = Meta.create("h:1", ports={"raft": 2, "api": 1}, models=["b", "a"], links={"wifi": True})
    assert m.ports == (("api", 1), ("raft", 2))
    assert m.models == ("a", "b")
    assert m.links == (("wifi", True),)
