"""The generic codec: schemas, round trips, and that bad input only ever raises DecodeError."""

from __future__ import annotations

import enum
from dataclasses import dataclass

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.codec import U8, U32, Codec
from consensus.errors import DecodeError, EncodeError, LocalProtocolError


class Color(enum.IntEnum):
    RED = 1
    BLUE = 2


@dataclass(frozen=True, slots=True)
class Inner:
    name: str
    weight: U8


TEST_CODEC: Codec[object] = Codec("test", max_size=4096)


@TEST_CODEC.register(1)
@dataclass(frozen=True, slots=True)
class Everything:
    n: int
    small: U32
    flag: bool
    ratio: float
    text: str
    blob: bytes
    color: Color
    maybe: Inner | None
    many: tuple[Inner, ...]
    pair: tuple[int, str]
    table: dict[str, int]


@TEST_CODEC.register(2)
@dataclass(frozen=True, slots=True)
class Ping:
    seq: U32


TEST_CODEC.check_schemas()

inners = st.builds(Inner, st.text(max_size=10), st.integers(0, 255))
everything = st.builds(
    Everything,
    n=st.integers(-(2**63), 2**64 - 1),
    small=st.integers(0, 2**32 - 1),
    flag=st.booleans(),
    ratio=st.floats(allow_nan=False),
    text=st.text(max_size=20),
    blob=st.binary(max_size=50),
    color=st.sampled_from(Color),
    maybe=st.none() | inners,
    many=st.lists(inners, max_size=5).map(tuple),
    pair=st.tuples(st.integers(-5, 5), st.text(max_size=3)),
    table=st.dictionaries(st.text(max_size=5), st.integers(-9, 9), max_size=4),
)


@settings(deadline=None)  # timings never gate a unit test
@given(everything)
def test_round_trip_of_every_supported_field_type(msg: Everything) -> None:
    assert TEST_CODEC.decode(TEST_CODEC.encode(msg)) == msg


@settings(deadline=None)  # timings never gate a unit test
@given(st.dictionaries(st.text(max_size=5), st.integers(-(2**63), 2**63), max_size=6))
def test_encoding_is_deterministic_whatever_the_dict_order(table: dict[str, int]) -> None:
    a = Everything(1, 1, True, 0.5, "", b"", Color.RED, None, (), (1, "x"), table)
    b = Everything(
        1, 1, True, 0.5, "", b"", Color.RED, None, (), (1, "x"), dict(reversed(list(table.items())))
    )
    assert TEST_CODEC.encode(a) == TEST_CODEC.encode(b)


def test_frame_is_type_byte_then_msgpack_array() -> None:
    frame = TEST_CODEC.encode(Ping(7))
    assert frame[0] == 2
    assert msgpack.unpackb(frame[1:]) == [7]


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_decode_error(data: bytes) -> None:
    try:
        TEST_CODEC.decode(data)
    except DecodeError as exc:
        assert exc.reason


@settings(max_examples=100, deadline=None)
@given(everything, st.data())
def test_truncated_frames_raise_decode_error(msg: Everything, data: st.DataObject) -> None:
    frame = TEST_CODEC.encode(msg)
    cut = data.draw(st.integers(0, len(frame) - 1))
    with pytest.raises(DecodeError):
        TEST_CODEC.decode(frame[:cut])


# Bodies with the right shape but wrong field types or ranges.
WRONG_BODIES = [
    [1, 2**32, True, 0.5, "", b"", 1, None, [], [1, "x"], {}],  # small out of range
    [1, -1, True, 0.5, "", b"", 1, None, [], [1, "x"], {}],  # negative unsigned
    [1, 1, 1, 0.5, "", b"", 1, None, [], [1, "x"], {}],  # int for bool
    [True, 1, True, 0.5, "", b"", 1, None, [], [1, "x"], {}],  # bool for int
    [1, 1, True, 1, "", b"", 1, None, [], [1, "x"], {}],  # int for float
    [1, 1, True, 0.5, b"", b"", 1, None, [], [1, "x"], {}],  # bytes for str
    [1, 1, True, 0.5, "", "", 1, None, [], [1, "x"], {}],  # str for bytes
    [1, 1, True, 0.5, "", b"", 9, None, [], [1, "x"], {}],  # unknown enum value
    [1, 1, True, 0.5, "", b"", 1, ["a"], [], [1, "x"], {}],  # nested with too few fields
    [1, 1, True, 0.5, "", b"", 1, ["a", 300], [], [1, "x"], {}],  # nested U8 out of range
    [1, 1, True, 0.5, "", b"", 1, None, [["a", 1], 5], [1, "x"], {}],  # bad tuple item
    [1, 1, True, 0.5, "", b"", 1, None, [], [1, "x", 2], {}],  # fixed tuple too long
    [1, 1, True, 0.5, "", b"", 1, None, [], [1, "x"], {1: 2}],  # int key for str
    [1, 1, True, 0.5, "", b"", 1, None, [], [1, "x"], []],  # array for map
    [1, 1, True, 0.5, "", b"", 1, None, [], [1, "x"]],  # missing field
    [1, 1, True, 0.5, "", b"", 1, None, [], [1, "x"], {}, 0],  # extra field
    {"n": 1},  # map for the body
    msgpack.ExtType(5, b"xx"),  # extension type
]


@pytest.mark.parametrize("body", WRONG_BODIES, ids=range(len(WRONG_BODIES)))
def test_wrong_field_types_raise_decode_error(body: object) -> None:
    frame = b"\x01" + msgpack.packb(body, use_bin_type=True)
    with pytest.raises(DecodeError):
        TEST_CODEC.decode(frame)


def test_unknown_type_and_oversize_and_trailing_data() -> None:
    with pytest.raises(DecodeError, match="unknown message type 9"):
        TEST_CODEC.decode(b"\x09\x90")
    with pytest.raises(DecodeError, match="limit"):
        TEST_CODEC.decode(b"\x02" + b"\x00" * 5000)
    with pytest.raises(DecodeError, match="malformed"):
        TEST_CODEC.decode(TEST_CODEC.encode(Ping(1)) + b"\x00")
    with pytest.raises(DecodeError, match="malformed"):
        TEST_CODEC.decode(b"\x02\xa3\xff\xfe\xfd")  # invalid UTF-8 string


def test_encode_checks_schema_and_size() -> None:
    with pytest.raises(EncodeError):
        TEST_CODEC.encode(Ping(-1))
    with pytest.raises(EncodeError):
        TEST_CODEC.encode(Inner("x", 1))  # not registered
    big = Everything(1, 1, True, 0.5, "", b"x" * 5000, Color.RED, None, (), (1, "x"), {})
    with pytest.raises(EncodeError, match="limit"):
        TEST_CODEC.encode(big)


def test_registration_rejects_bad_classes_and_duplicate_ids() -> None:
    codec: Codec[object] = Codec("reg")

    @dataclass
    class Mutable:
        x: int

    with pytest.raises(LocalProtocolError):
        codec.register(1)(Mutable)
    codec.register(1)(Ping)
    with pytest.raises(LocalProtocolError):
        codec.register(1)(Inner)
    with pytest.raises(LocalProtocolError):
        codec.register(256)


def test_decode_accepts_any_bytes_like_and_refuses_other_types() -> None:
    frame = TEST_CODEC.encode(Ping(3))
    assert TEST_CODEC.decode(bytearray(frame)) == Ping(3)
    assert TEST_CODEC.decode(memoryview(frame)) == Ping(3)
    with pytest.raises(DecodeError):
        TEST_CODEC.decode("not bytes")  # type: ignore[arg-type]


def test_deeply_nested_input_is_a_decode_error_not_a_crash() -> None:
    depth = 3000
    with pytest.raises(DecodeError):
        TEST_CODEC.decode(b"\x02" + b"\x91" * depth + b"\x00")
