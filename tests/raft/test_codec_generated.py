"""The codec's generated per-class converters (``consensus.codec``): the fast paths give the
same bytes and objects as the schema says, and every refusal still names the field it is about.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import msgpack
import pytest

from consensus.codec import U8, Codec
from consensus.errors import DecodeError, EncodeError
from consensus.messages import AppendEntries, Entry, EntryKind, decode, encode


class Shade(enum.IntEnum):
    LIGHT = 1
    DARK = 2


@dataclass(frozen=True, slots=True)
class Leaf:
    name: str
    level: U8


CODEC: Codec[object] = Codec("gen-test")


@CODEC.register(1)
@dataclass(frozen=True, slots=True)
class Tree:
    shade: Shade
    leaves: tuple[Leaf, ...]
    best: Leaf | None = None


@CODEC.register(2)
@dataclass(frozen=True, slots=True)
class Checked:
    n: int

    def __post_init__(self) -> None:
        if self.n < 0:
            raise ValueError("negative")


def test_an_append_round_trips_to_equal_frozen_objects() -> None:
    ents = tuple(Entry(i, 3, EntryKind.NORMAL, b"x" * i) for i in range(1, 30))
    msg = AppendEntries("a", "b", 3, 0, 0, ents, 7)
    back = decode(encode(msg))
    assert back == msg
    assert type(back.entries[0].kind) is EntryKind
    with pytest.raises(AttributeError):
        back.entries[0].index = 5  # type: ignore[misc]  # still frozen


def test_enum_members_encode_as_their_int() -> None:
    frame = CODEC.encode(Tree(Shade.DARK, ()))
    assert msgpack.unpackb(frame[1:]) == [2, [], None]
    assert type(CODEC.decode(frame).shade) is Shade


def test_a_refusal_names_the_field_path() -> None:
    bad_level = b"\x01" + msgpack.packb([1, [["a", 1], ["b", 300]], None])
    with pytest.raises(DecodeError, match=r"Tree\.leaves\[1\]\.level: int 300 out of range"):
        CODEC.decode(bad_level)
    bad_shade = b"\x01" + msgpack.packb([True, [], None])
    with pytest.raises(DecodeError, match=r"Tree\.shade: expected Shade"):
        CODEC.decode(bad_shade)
    with pytest.raises(DecodeError, match=r"Tree\.best\.name: expected str"):
        CODEC.decode(b"\x01" + msgpack.packb([1, [], [b"n", 1]]))
    with pytest.raises(EncodeError, match=r"Tree\.leaves\[0\]\.level"):
        CODEC.encode(Tree(Shade.LIGHT, (Leaf("x", -1),)))
    with pytest.raises(EncodeError, match=r"Tree\.shade: expected Shade"):
        CODEC.encode(Tree(1, ()))  # type: ignore[arg-type]


def test_a_class_with_post_init_still_runs_it_on_decode() -> None:
    assert CODEC.decode(CODEC.encode(Checked(3))) == Checked(3)
    with pytest.raises(DecodeError, match="Checked rejected its fields: negative"):
        CODEC.decode(b"\x02" + msgpack.packb([-1]))
