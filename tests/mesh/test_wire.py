"""The envelope codec and TCP framing: round trips, and bad input only ever raises EnvelopeError."""

from __future__ import annotations

import asyncio
import contextlib

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.errors import LocalProtocolError, RemoteProtocolError
from moltmesh.mesh.drops import FRAME_REASONS, DropReason
from moltmesh.mesh.wire import (
    LENGTH_PREFIX,
    PROTOCOL_VERSION,
    Channel,
    Envelope,
    EnvelopeError,
    FrameDecoder,
    decode_envelope,
    encode_envelope,
    encode_frame,
    read_frame,
)

ids = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=64)
envelopes = st.builds(
    Envelope,
    mesh_id=ids,
    channel=st.sampled_from(list(Channel)),
    sender=ids,
    body=st.binary(max_size=2000),
)


@given(envelopes)
def test_envelope_round_trips(env: Envelope):
    assert decode_envelope(encode_envelope(env), mesh_id=env.mesh_id) == env


@given(st.binary(max_size=300))
@settings(max_examples=300)
def test_arbitrary_bytes_raise_only_envelope_error(data: bytes):
    try:
        decode_envelope(data)
    except EnvelopeError as e:
        assert isinstance(e, RemoteProtocolError)
        assert e.drop in (DropReason.GARBAGE, DropReason.OVERSIZE)


@given(envelopes, st.data())
def test_truncated_or_mutated_envelopes_never_raise_anything_else(env: Envelope, data):
    raw = encode_envelope(env)
    cut = data.draw(st.integers(0, len(raw) - 1))
    pos = data.draw(st.integers(0, len(raw) - 1))
    flipped = bytearray(raw)
    flipped[pos] ^= data.draw(st.integers(1, 255))
    for candidate in (raw[:cut], bytes(flipped)):
        with contextlib.suppress(EnvelopeError):
            decode_envelope(candidate, mesh_id=env.mesh_id)


@given(
    st.lists(
        st.one_of(
            st.integers(-(2**63), 2**64 - 1), st.text(), st.binary(), st.none(), st.booleans()
        ),
        max_size=6,
    )
)
def test_wrongly_typed_arrays_are_garbage(values: list):
    try:
        decode_envelope(msgpack.packb(values, use_bin_type=True))
    except EnvelopeError as e:
        assert e.drop is DropReason.GARBAGE


def test_wrong_mesh_and_version_and_channel_are_named():
    env = Envelope("mesh-a", Channel.SWIM, "node1", b"x")
    with pytest.raises(EnvelopeError) as e:
        decode_envelope(encode_envelope(env), mesh_id="mesh-b")
    assert e.value.drop is DropReason.WRONG_MESH
    v = PROTOCOL_VERSION
    for bad in ([v - 1, "m", 1, "n", b""], [v + 1, "m", 1, "n", b""], [v, "m", 200, "n", b""],
                [v, "m", 1, "", b""]):  # fmt: skip
        with pytest.raises(EnvelopeError) as e:
            decode_envelope(msgpack.packb(bad, use_bin_type=True))
        assert e.value.drop is DropReason.GARBAGE


def test_size_limits_both_ways():
    env = Envelope("m", Channel.INFER, "n", b"x" * 1000)
    with pytest.raises(LocalProtocolError):
        encode_envelope(env, max_size=500)
    with pytest.raises(EnvelopeError) as e:
        decode_envelope(encode_envelope(env), max_size=500)
    assert e.value.drop is DropReason.OVERSIZE
    with pytest.raises(LocalProtocolError):
        encode_envelope(Envelope("", Channel.SWIM, "n", b""))


@given(st.lists(envelopes, max_size=5), st.lists(st.integers(1, 64), min_size=1, max_size=20))
def test_frame_decoder_reassembles_any_split(envs: list[Envelope], cuts: list[int]):
    stream = b"".join(encode_frame(e) for e in envs)
    dec = FrameDecoder()
    out: list[bytes] = []
    pos, i = 0, 0
    while pos < len(stream):
        step = cuts[i % len(cuts)]
        out += dec.feed(stream[pos : pos + step])
        pos += step
        i += 1
    assert [decode_envelope(p) for p in out] == envs
    assert dec.pending == 0


def test_frame_decoder_refuses_oversize_length():
    dec = FrameDecoder(max_size=100)
    with pytest.raises(EnvelopeError) as e:
        dec.feed(LENGTH_PREFIX.pack(101))
    assert e.value.drop is DropReason.OVERSIZE


async def test_read_frame_eof_truncation_and_oversize():
    def reader_with(data: bytes) -> asyncio.StreamReader:
        r = asyncio.StreamReader()
        r.feed_data(data)
        r.feed_eof()
        return r

    frame = encode_frame(Envelope("m", Channel.RAFT, "n", b"abc"))
    r = reader_with(frame)
    assert decode_envelope(await read_frame(r)).body == b"abc"
    assert await read_frame(r) is None  # clean EOF between frames
    for data, drop in (
        (frame[:2], DropReason.GARBAGE),
        (frame[:-1], DropReason.GARBAGE),
        (LENGTH_PREFIX.pack(10**9), DropReason.OVERSIZE),
    ):
        with pytest.raises(EnvelopeError) as e:
            await read_frame(reader_with(data), max_size=1000)
        assert e.value.drop is drop


def test_drop_counters_count_export_and_notify():
    from prometheus_client import CollectorRegistry, generate_latest

    from moltmesh.mesh.drops import DropCounters, Transport

    drops = DropCounters()
    heard: list[tuple[Transport, DropReason]] = []
    drops.listeners.append(lambda t, r: heard.append((t, r)))
    drops.add(Transport.UDP, DropReason.REPLAY)
    drops.add(Transport.TCP, DropReason.REPLAY, 2)
    assert drops.get(DropReason.REPLAY) == 3 and drops.get(DropReason.REPLAY, Transport.UDP) == 1
    assert heard == [(Transport.UDP, DropReason.REPLAY), (Transport.TCP, DropReason.REPLAY)]
    registry = CollectorRegistry()
    registry.register(drops.collector())
    text = generate_latest(registry).decode()
    assert 'moltmesh_mesh_dropped_frames_total{reason="replay",transport="tcp"} 2.0' in text
    # the frame reasons x 2 transports, and the connection reasons for TCP only
    assert text.count("moltmesh_mesh_dropped_frames_total{") == len(DropReason) + len(FRAME_REASONS)
