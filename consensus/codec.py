"""A generic wire codec: one type byte, then a msgpack body.

Each protocol (Raft, SWIM, ...) owns one ``Codec`` and registers its message classes under a
one-byte type id::

    class RaftMsgType(enum.IntEnum):   # APPEND-ONLY: the numbers are the protocol
        VOTE = 1

    RAFT_CODEC = Codec("raft")

    @RAFT_CODEC.register(RaftMsgType.VOTE)
    @dataclass(frozen=True, slots=True)
    class Vote:
        src: str
        term: U64

Wire format of one message: ``bytes([type_id]) + msgpack.packb([field values in declaration
order])``. Nested dataclasses are msgpack arrays of their fields in the same way.

Because the type ids and the field order *are* the protocol, protocols define their type ids in
an ``IntEnum`` whose values are **append-only**: never renumber, never reuse a retired number, and
add new fields only at the end of a class (decoding is strict: a body must carry exactly the
declared fields).

Supported field types (checked on ``encode`` and on ``decode``):

- ``int`` (any msgpack integer, 64-bit), ``Annotated[int, IntRange(lo, hi)]`` (see ``U8``,
  ``U32``, ``U64``, ``I64``), ``bool``, ``float``, ``str``, ``bytes``;
- ``enum.IntEnum`` subclasses (unknown values are rejected);
- ``X | None``; ``tuple[X, ...]`` and fixed ``tuple[X, Y]``; ``dict[K, V]`` (keys sorted on
  encode so the bytes are deterministic);
- frozen dataclasses (nested, registered or not).

Contracts: ``decode`` raises only ``DecodeError`` (with a ``reason``), whatever the input;
``encode`` raises only ``EncodeError``. Both enforce the codec's ``max_size`` on the whole frame.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar

import msgpack

from consensus.errors import DecodeError, EncodeError, LocalProtocolError

MSGPACK_INT_MIN = -(2**63)
MSGPACK_INT_MAX = 2**64 - 1
DEFAULT_MAX_SIZE = 4 * 1024 * 1024
"""Default hard limit on one encoded frame (type byte included), in bytes."""


@dataclass(frozen=True, slots=True)
class IntRange:
    """Inclusive bounds for an ``int`` field: ``Annotated[int, IntRange(0, 255)]``."""

    lo: int
    hi: int


U8 = Annotated[int, IntRange(0, 2**8 - 1)]
U16 = Annotated[int, IntRange(0, 2**16 - 1)]
U32 = Annotated[int, IntRange(0, 2**32 - 1)]
U64 = Annotated[int, IntRange(0, 2**64 - 1)]
I64 = Annotated[int, IntRange(-(2**63), 2**63 - 1)]


class _Invalid(Exception):
    """Internal: a value does not match its schema. Carries the field path."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")


_Fn = Callable[[Any, str], Any]
"""A converter: (value, path) -> converted value; raises ``_Invalid``."""


@dataclass(frozen=True, slots=True)
class _Conv:
    encode: _Fn
    decode: _Fn


T = TypeVar("T")


def _type_name(v: object) -> str:
    return type(v).__name__


def _int_conv(lo: int, hi: int) -> _Conv:
    def check(v: Any, path: str) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise _Invalid(path, f"expected int, got {_type_name(v)}")
        if not lo <= v <= hi:
            raise _Invalid(path, f"int {v} out of range [{lo}, {hi}]")
        return int(v)

    return _Conv(check, check)


def _exact_conv(py_type: type) -> _Conv:
    def check(v: Any, path: str) -> Any:
        if type(v) is not py_type:
            raise _Invalid(path, f"expected {py_type.__name__}, got {_type_name(v)}")
        return v

    return _Conv(check, check)


def _enum_conv(cls: type[enum.IntEnum]) -> _Conv:
    def enc(v: Any, path: str) -> int:
        if not isinstance(v, cls):
            raise _Invalid(path, f"expected {cls.__name__}, got {_type_name(v)}")
        return int(v)

    def dec(v: Any, path: str) -> enum.IntEnum:
        if type(v) is not int:
            raise _Invalid(path, f"expected {cls.__name__} (int), got {_type_name(v)}")
        try:
            return cls(v)
        except ValueError:
            raise _Invalid(path, f"unknown {cls.__name__} value {v}") from None

    return _Conv(enc, dec)


def _optional_conv(inner: _Conv) -> _Conv:
    def enc(v: Any, path: str) -> Any:
        return None if v is None else inner.encode(v, path)

    def dec(v: Any, path: str) -> Any:
        return None if v is None else inner.decode(v, path)

    return _Conv(enc, dec)


def _var_tuple_conv(item: _Conv) -> _Conv:
    def enc(v: Any, path: str) -> list[Any]:
        if not isinstance(v, tuple):
            raise _Invalid(path, f"expected tuple, got {_type_name(v)}")
        return [item.encode(x, f"{path}[{i}]") for i, x in enumerate(v)]

    def dec(v: Any, path: str) -> tuple[Any, ...]:
        if type(v) is not tuple:
            raise _Invalid(path, f"expected array, got {_type_name(v)}")
        return tuple(item.decode(x, f"{path}[{i}]") for i, x in enumerate(v))

    return _Conv(enc, dec)


def _fixed_tuple_conv(items: list[_Conv]) -> _Conv:
    n = len(items)

    def enc(v: Any, path: str) -> list[Any]:
        if not isinstance(v, tuple) or len(v) != n:
            raise _Invalid(path, f"expected tuple of {n}, got {_type_name(v)}")
        return [c.encode(x, f"{path}[{i}]") for i, (c, x) in enumerate(zip(items, v, strict=True))]

    def dec(v: Any, path: str) -> tuple[Any, ...]:
        if type(v) is not tuple or len(v) != n:
            raise _Invalid(path, f"expected array of {n}, got {_type_name(v)}")
        return tuple(
            c.decode(x, f"{path}[{i}]") for i, (c, x) in enumerate(zip(items, v, strict=True))
        )

    return _Conv(enc, dec)


def _dict_conv(key: _Conv, val: _Conv) -> _Conv:
    def enc(v: Any, path: str) -> dict[Any, Any]:
        if not isinstance(v, dict):
            raise _Invalid(path, f"expected dict, got {_type_name(v)}")
        out = {key.encode(k, f"{path}.key"): val.encode(x, f"{path}[{k!r}]") for k, x in v.items()}
        try:
            return dict(sorted(out.items()))
        except TypeError:
            raise _Invalid(path, "dict keys are not mutually comparable") from None

    def dec(v: Any, path: str) -> dict[Any, Any]:
        if type(v) is not dict:
            raise _Invalid(path, f"expected map, got {_type_name(v)}")
        return {key.decode(k, f"{path}.key"): val.decode(x, f"{path}[{k!r}]") for k, x in v.items()}

    return _Conv(enc, dec)


def _dataclass_conv(cls: type, fields: list[tuple[str, _Conv]]) -> _Conv:
    names = [name for name, _ in fields]
    convs = [conv for _, conv in fields]
    n = len(fields)

    def enc(v: Any, path: str) -> list[Any]:
        if type(v) is not cls:
            raise _Invalid(path, f"expected {cls.__name__}, got {_type_name(v)}")
        return [c.encode(getattr(v, name), f"{path}.{name}") for name, c in fields]

    def dec(v: Any, path: str) -> Any:
        if type(v) is not tuple:
            raise _Invalid(path, f"expected array for {cls.__name__}, got {_type_name(v)}")
        if len(v) != n:
            raise _Invalid(path, f"{cls.__name__} needs {n} fields, got {len(v)}")
        values = [c.decode(x, f"{path}.{name}") for name, c, x in zip(names, convs, v, strict=True)]
        try:
            return cls(*values)
        except (TypeError, ValueError) as exc:
            raise _Invalid(path, f"{cls.__name__} rejected its fields: {exc}") from None

    return _Conv(enc, dec)


class _Compiler:
    """Turns type hints into converters, caching one converter per dataclass."""

    def __init__(self) -> None:
        self._cache: dict[type, _Conv] = {}

    def dataclass(self, cls: type) -> _Conv:
        cached = self._cache.get(cls)
        if cached is not None:
            return cached
        if not dataclasses.is_dataclass(cls):
            raise LocalProtocolError(f"{cls!r} is not a dataclass")
        hints = typing.get_type_hints(cls, include_extras=True)
        fields = [
            (f.name, self.type(hints[f.name], f"{cls.__name__}.{f.name}"))
            for f in dataclasses.fields(cls)
        ]
        conv = _dataclass_conv(cls, fields)
        self._cache[cls] = conv
        return conv

    def type(self, tp: Any, where: str) -> _Conv:
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        if origin is Annotated:
            base, *meta = args
            ranges = [m for m in meta if isinstance(m, IntRange)]
            if base is not int or len(ranges) != 1:
                raise LocalProtocolError(f"{where}: only Annotated[int, IntRange] is supported")
            return _int_conv(ranges[0].lo, ranges[0].hi)
        if tp is int:
            return _int_conv(MSGPACK_INT_MIN, MSGPACK_INT_MAX)
        if tp in (bool, float, str, bytes):
            return _exact_conv(tp)
        if isinstance(tp, type) and issubclass(tp, enum.IntEnum):
            return _enum_conv(tp)
        if origin in (typing.Union, types.UnionType):
            others = [a for a in args if a is not type(None)]
            if len(others) != 1 or len(args) != 2:
                raise LocalProtocolError(f"{where}: only 'X | None' unions are supported")
            return _optional_conv(self.type(others[0], where))
        if origin is tuple:
            if len(args) == 2 and args[1] is Ellipsis:
                return _var_tuple_conv(self.type(args[0], f"{where}[]"))
            return _fixed_tuple_conv([self.type(a, f"{where}[{i}]") for i, a in enumerate(args)])
        if origin is dict:
            return _dict_conv(self.type(args[0], f"{where}.key"), self.type(args[1], where))
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            return self.dataclass(tp)
        raise LocalProtocolError(f"{where}: unsupported field type {tp!r}")


class Codec(Generic[T]):
    """A registry of message classes of one protocol, and their encoder/decoder.

    ``name`` appears in error messages; ``max_size`` is the hard limit on an encoded frame.
    Registration happens at import time; encoding and decoding are then pure functions.
    """

    def __init__(self, name: str, max_size: int = DEFAULT_MAX_SIZE) -> None:
        if max_size < 2:
            raise LocalProtocolError("max_size must leave room for a type byte and a body")
        self.name = name
        self.max_size = max_size
        self._by_id: dict[int, type] = {}
        self._id_of: dict[type, int] = {}
        self._compiler = _Compiler()

    def register(self, type_id: int) -> Callable[[type[T]], type[T]]:
        """Class decorator: register a frozen, slotted dataclass under ``type_id`` (0–255)."""
        tid = int(type_id)
        if not 0 <= tid <= 255:
            raise LocalProtocolError(f"{self.name}: type id {tid} does not fit in one byte")
        if tid in self._by_id:
            raise LocalProtocolError(
                f"{self.name}: type id {tid} already used by {self._by_id[tid].__name__}"
            )

        def deco(cls: type[T]) -> type[T]:
            if not dataclasses.is_dataclass(cls):
                raise LocalProtocolError(f"{cls!r} is not a dataclass")
            params = cls.__dataclass_params__  # type: ignore[attr-defined]
            if not params.frozen or "__slots__" not in cls.__dict__:
                raise LocalProtocolError(f"{cls.__name__} must be a frozen, slotted dataclass")
            if cls in self._id_of:
                raise LocalProtocolError(f"{cls.__name__} is already registered")
            self._by_id[tid] = cls
            self._id_of[cls] = tid
            return cls

        return deco

    @property
    def message_types(self) -> dict[int, type]:
        """A copy of the registry: type id -> class, in id order."""
        return dict(sorted(self._by_id.items()))

    def type_id(self, cls: type) -> int:
        """The type id ``cls`` is registered under; ``LocalProtocolError`` if none."""
        try:
            return self._id_of[cls]
        except KeyError:
            raise LocalProtocolError(f"{self.name}: {cls!r} is not registered") from None

    def encode(self, msg: T) -> bytes:
        """Encode a registered message; raises ``EncodeError`` on schema mismatch or oversize."""
        tid = self._id_of.get(type(msg))
        if tid is None:
            raise EncodeError(f"{self.name}: {type(msg).__name__} is not a registered message")
        conv = self._compiler.dataclass(type(msg))
        try:
            body = msgpack.packb(conv.encode(msg, type(msg).__name__), use_bin_type=True)
        except _Invalid as exc:
            raise EncodeError(f"{self.name}: {exc}") from None
        frame = bytes((tid,)) + body
        if len(frame) > self.max_size:
            raise EncodeError(f"{self.name}: frame of {len(frame)} bytes > limit {self.max_size}")
        return frame

    def decode(self, data: bytes) -> T:
        """Decode one frame; raises ``DecodeError`` (only) on any invalid input."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise DecodeError(f"{self.name}: expected bytes, got {_type_name(data)}")
        if len(data) > self.max_size:
            raise DecodeError(f"{self.name}: frame of {len(data)} bytes > limit {self.max_size}")
        if len(data) < 2:
            raise DecodeError(f"{self.name}: frame too short ({len(data)} bytes)")
        tid = data[0]
        cls = self._by_id.get(tid)
        if cls is None:
            raise DecodeError(f"{self.name}: unknown message type {tid}")
        conv = self._compiler.dataclass(cls)  # schemas compile at registration time in practice
        try:
            obj = msgpack.unpackb(
                bytes(data[1:]), raw=False, use_list=False, strict_map_key=False, timestamp=0
            )
        except Exception as exc:  # msgpack raises many types (ExtraData, FormatError, ...)
            raise DecodeError(f"{self.name}: malformed msgpack ({type(exc).__name__})") from None
        try:
            return conv.decode(obj, cls.__name__)
        except _Invalid as exc:
            raise DecodeError(f"{self.name}: {exc}") from None
        except Exception as exc:  # defensive: nothing but DecodeError may leave decode()
            raise DecodeError(
                f"{self.name}: invalid {cls.__name__} ({type(exc).__name__})"
            ) from None

    def check_schemas(self) -> None:
        """Compile every registered schema now; raises ``LocalProtocolError`` on a bad one.

        Call from a test (or at the end of a messages module) to catch schema mistakes early.
        """
        for cls in self._by_id.values():
            self._compiler.dataclass(cls)
