"""``fast_init``: the same construction as the dataclass's own ``__init__``, faster."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import pytest

from consensus.fastinit import fast_init
from consensus.kv_types import KeyValue
from consensus.messages import Entry, EntryKind


@dataclass(frozen=True, slots=True)
class Plain:
    a: int
    b: str = "x"
    c: list[int] = field(default_factory=list)


@fast_init
@dataclass(frozen=True, slots=True)
class Fast:
    a: int
    b: str = "x"
    c: list[int] = field(default_factory=list)


@pytest.mark.parametrize(
    "args, kwargs",
    [((1,), {}), ((1, "y"), {}), ((1,), {"c": [2]}), ((), {"a": 3, "b": "z", "c": [4, 5]})],
)
def test_constructs_what_the_dataclass_init_constructs(args, kwargs):
    plain, fast = Plain(*args, **kwargs), Fast(*args, **kwargs)
    assert dataclasses.astuple(plain) == dataclasses.astuple(fast)


def test_the_class_stays_a_frozen_hashable_dataclass():
    e = Entry(3, 2)
    assert (e.kind, e.data) == (EntryKind.NORMAL, b"")
    assert e == Entry(3, 2) and hash(e) == hash(Entry(3, 2))
    assert dataclasses.replace(e, data=b"x").data == b"x"
    with pytest.raises(dataclasses.FrozenInstanceError):
        e.index = 4  # type: ignore[misc]
    with pytest.raises(TypeError):
        KeyValue("k", b"v", 1, 2)  # type: ignore[call-arg]  # a field is missing
    assert Fast(1).c == [] and Fast(1).c is not Fast(1).c  # the factory runs per instance


def test_refuses_classes_it_would_change():
    @dataclass(frozen=True, slots=True)
    class Post:
        a: int

        def __post_init__(self) -> None:
            pass

    @dataclass(slots=True)
    class Mutable:
        a: int

    @dataclass(frozen=True)
    class NoSlots:
        a: int

    class NotADataclass:
        a: int

    for cls in (Post, Mutable, NoSlots, NotADataclass):
        with pytest.raises(TypeError):
            fast_init(cls)
