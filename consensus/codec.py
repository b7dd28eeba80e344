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

_packb = msgpack.packb
_unpackb = msgpack.unpackb

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
    """Internal: a value does not match its schema. ``where`` collects the path segments from
    the failing value outwards (appended as the error unwinds through the converters), so the
    success path never builds a path string."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.where: list[str] = []

    def path(self, root: str) -> str:
        return root + "".join(reversed(self.where))


_Fn = Callable[[Any], Any]
"""A converter: value -> converted value; raises ``_Invalid``."""


@dataclass(frozen=True, slots=True)
class _Conv:
    """A converter pair plus, for the generated dataclass code, how to check a value inline:
    ``fast_enc(x)`` / ``fast_dec(x)`` give a Python expression over the variable named ``x``
    that is true when the value passes unchanged (the converter runs only when it is false);
    ``None``: the converter always runs. ``consts``: (unique name, object) pairs those
    expressions refer to."""

    encode: _Fn
    decode: _Fn
    fast_enc: Callable[[str], str] | None = None
    fast_dec: Callable[[str], str] | None = None
    consts: tuple[tuple[str, object], ...] = ()
    lookup_dec: str | None = None
    """Decoding by table: the name (in ``consts``) of a dict from the wire's int to the value;
    a miss, or a value that is not an ``int``, goes to the converter."""


T = TypeVar("T")


def _type_name(v: object) -> str:
    return type(v).__name__


def _at(conv: _Fn, x: Any, seg: str) -> Any:
    """``conv(x)``, the path segment ``seg`` added to its error."""
    try:
        return conv(x)
    except _Invalid as e:
        e.where.append(seg)
        raise


def _int_conv(lo: int, hi: int) -> _Conv:
    def check(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise _Invalid(f"expected int, got {_type_name(v)}")
        if not lo <= v <= hi:
            raise _Invalid(f"int {v} out of range [{lo}, {hi}]")
        return int(v)

    def fast(x: str) -> str:
        return f"(type({x}) is int and {lo} <= {x} <= {hi})"

    return _Conv(check, check, fast, fast)


def _exact_conv(py_type: type) -> _Conv:
    def check(v: Any) -> Any:
        if type(v) is not py_type:
            raise _Invalid(f"expected {py_type.__name__}, got {_type_name(v)}")
        return v

    def fast(x: str) -> str:
        return f"(type({x}) is {py_type.__name__})"

    return _Conv(check, check, fast, fast)


def _enum_conv(cls: type[enum.IntEnum]) -> _Conv:
    members = {int(m): m for m in cls}

    def enc(v: Any) -> int:
        if not isinstance(v, cls):
            raise _Invalid(f"expected {cls.__name__}, got {_type_name(v)}")
        return int(v)

    def dec(v: Any) -> enum.IntEnum:
        if type(v) is not int:
            raise _Invalid(f"expected {cls.__name__} (int), got {_type_name(v)}")
        m = members.get(v)
        if m is None:
            raise _Invalid(f"unknown {cls.__name__} value {v}")
        return m

    # Encoding leaves a member as is: msgpack packs an int subclass as the int it is.
    const, table = f"_enum_{id(cls)}", f"_enum_members_{id(cls)}"
    return _Conv(
        enc,
        dec,
        lambda x: f"(type({x}) is {const})",
        None,
        ((const, cls), (table, members)),
        lookup_dec=table,
    )


def _optional_conv(inner: _Conv) -> _Conv:
    def enc(v: Any) -> Any:
        return None if v is None else inner.encode(v)

    def dec(v: Any) -> Any:
        return None if v is None else inner.decode(v)

    fe, fd = inner.fast_enc, inner.fast_dec
    return _Conv(
        enc,
        dec,
        None if fe is None else (lambda x: f"({x} is None or {fe(x)})"),
        None if fd is None else (lambda x: f"({x} is None or {fd(x)})"),
        inner.consts,
    )


def _item_error(conv: _Fn, v: Any) -> _Invalid:
    """The error of the first item of ``v`` that ``conv`` refuses, its index in the path."""
    for i, x in enumerate(v):
        try:
            conv(x)
        except _Invalid as e:
            e.where.append(f"[{i}]")
            return e
    return _Invalid("inconsistent item conversion")  # pragma: no cover - conv is pure


def _var_tuple_conv(item: _Conv) -> _Conv:
    ienc, idec = item.encode, item.decode

    def enc(v: Any) -> list[Any]:
        if not isinstance(v, tuple):
            raise _Invalid(f"expected tuple, got {_type_name(v)}")
        try:
            return [ienc(x) for x in v]
        except _Invalid:
            raise _item_error(ienc, v) from None

    def dec(v: Any) -> tuple[Any, ...]:
        if type(v) is not tuple:
            raise _Invalid(f"expected array, got {_type_name(v)}")
        try:
            return tuple([idec(x) for x in v])
        except _Invalid:
            raise _item_error(idec, v) from None

    return _Conv(enc, dec)


def _fixed_tuple_conv(items: list[_Conv]) -> _Conv:
    n = len(items)

    def enc(v: Any) -> list[Any]:
        if not isinstance(v, tuple) or len(v) != n:
            raise _Invalid(f"expected tuple of {n}, got {_type_name(v)}")
        return [_at(c.encode, x, f"[{i}]") for i, (c, x) in enumerate(zip(items, v, strict=True))]

    def dec(v: Any) -> tuple[Any, ...]:
        if type(v) is not tuple or len(v) != n:
            raise _Invalid(f"expected array of {n}, got {_type_name(v)}")
        return tuple(
            _at(c.decode, x, f"[{i}]") for i, (c, x) in enumerate(zip(items, v, strict=True))
        )

    return _Conv(enc, dec)


def _dict_conv(key: _Conv, val: _Conv) -> _Conv:
    def enc(v: Any) -> dict[Any, Any]:
        if not isinstance(v, dict):
            raise _Invalid(f"expected dict, got {_type_name(v)}")
        out = {_at(key.encode, k, ".key"): _at(val.encode, x, f"[{k!r}]") for k, x in v.items()}
        try:
            return dict(sorted(out.items()))
        except TypeError:
            raise _Invalid("dict keys are not mutually comparable") from None

    def dec(v: Any) -> dict[Any, Any]:
        if type(v) is not dict:
            raise _Invalid(f"expected map, got {_type_name(v)}")
        return {_at(key.decode, k, ".key"): _at(val.decode, x, f"[{k!r}]") for k, x in v.items()}

    return _Conv(enc, dec)


def _dataclass_conv(cls: type, fields: list[tuple[str, _Conv]]) -> _Conv:
    """Encoder and decoder of ``cls``, generated as straight-line code: each field is checked
    inline where its converter says how (``_Conv.fast_enc``/``fast_dec``) and handed to its
    converter only otherwise (which converts it, or raises with the reason and the path)."""
    n = len(fields)
    name = cls.__name__
    ns: dict[str, Any] = {"CLS": cls, "_Invalid": _Invalid, "_at": _at, "_tn": _type_name}
    xs = ", ".join(f"x{i}" for i in range(n))
    enc = [
        "def enc(v):",
        "    if type(v) is not CLS:",
        f"        raise _Invalid('expected {name}, got ' + _tn(v))",
    ]
    dec = [
        "def dec(v):",
        "    if type(v) is not tuple:",
        f"        raise _Invalid('expected array for {name}, got ' + _tn(v))",
        f"    if len(v) != {n}:",
        f"        raise _Invalid('{name} needs {n} fields, got ' + str(len(v)))",
    ]
    if n:
        dec.append(f"    ({xs},) = v")
    for i, (fname, conv) in enumerate(fields):
        ns[f"enc{i}"], ns[f"dec{i}"] = conv.encode, conv.decode
        ns.update(conv.consts)
        enc.append(f"    x{i} = v.{fname}")
        for lines, fast, fn in ((enc, conv.fast_enc, "enc"), (dec, conv.fast_dec, "dec")):
            call = f"x{i} = _at({fn}{i}, x{i}, {'.' + fname!r})"
            if fn == "dec" and conv.lookup_dec is not None:
                lines += [
                    f"    if type(x{i}) is int and (y := {conv.lookup_dec}.get(x{i})) is not None:",
                    f"        x{i} = y",
                    "    else:",
                    f"        {call}",
                ]
            elif fast is None:
                lines.append(f"    {call}")
            else:
                lines += [f"    if not {fast(f'x{i}')}:", f"        {call}"]
    enc.append(f"    return [{xs}]")
    if _plain_slots(cls, [f for f, _ in fields]):
        # The dataclass' own __init__ would only store the fields (through the frozen
        # class's slow setattr): store them through the slots directly.
        ns["_new"] = object.__new__
        dec.append("    o = _new(CLS)")
        for i, (fname, _) in enumerate(fields):
            ns[f"set{i}"] = cls.__dict__[fname].__set__
            dec.append(f"    set{i}(o, x{i})")
        dec.append("    return o")
    else:
        dec += [
            "    try:",
            f"        return CLS({xs})",
            "    except (TypeError, ValueError) as exc:",
            f"        raise _Invalid('{name} rejected its fields: ' + str(exc)) from None",
        ]
    exec("\n".join(enc + dec), ns)  # our own generated code, from the schema alone
    return _Conv(ns["enc"], ns["dec"])


def _plain_slots(cls: type, names: list[str]) -> bool:
    """Does ``cls`` keep each field in a slot of its own, with nothing run at construction
    beyond storing the fields (a dataclass-generated ``__init__``, no ``__post_init__``)?"""
    init = cls.__dict__.get("__init__")
    params = getattr(cls, "__dataclass_params__", None)
    return (
        params is not None
        and params.init
        and getattr(getattr(init, "__code__", None), "co_filename", "") == "<string>"
        and not hasattr(cls, "__post_init__")
        and all(isinstance(cls.__dict__.get(f), types.MemberDescriptorType) for f in names)
    )


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
        self._enc: dict[type, tuple[bytes, _Fn]] = {}  # class -> (type byte, encoder)
        self._dec: dict[int, _Fn] = {}  # type id -> decoder

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
        how = self._enc.get(type(msg))
        if how is None:
            how = self._encoder(type(msg))
        prefix, enc = how
        try:
            frame = prefix + _packb(enc(msg), use_bin_type=True)
        except _Invalid as exc:
            raise EncodeError(f"{self.name}: {exc.path(type(msg).__name__)}: {exc}") from None
        if len(frame) > self.max_size:
            raise EncodeError(f"{self.name}: frame of {len(frame)} bytes > limit {self.max_size}")
        return frame

    def _encoder(self, cls: type) -> tuple[bytes, _Fn]:
        """The type byte and compiled encoder of ``cls`` (cached for the next ``encode``)."""
        tid = self._id_of.get(cls)
        if tid is None:
            raise EncodeError(f"{self.name}: {cls.__name__} is not a registered message")
        how = (bytes((tid,)), self._compiler.dataclass(cls).encode)
        self._enc[cls] = how
        return how

    def decode(self, data: bytes) -> T:
        """Decode one frame; raises ``DecodeError`` (only) on any invalid input."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise DecodeError(f"{self.name}: expected bytes, got {_type_name(data)}")
        if len(data) > self.max_size:
            raise DecodeError(f"{self.name}: frame of {len(data)} bytes > limit {self.max_size}")
        if len(data) < 2:
            raise DecodeError(f"{self.name}: frame too short ({len(data)} bytes)")
        tid = data[0]
        dec = self._dec.get(tid)
        if dec is None:
            cls = self._by_id.get(tid)
            if cls is None:
                raise DecodeError(f"{self.name}: unknown message type {tid}")
            dec = self._dec[tid] = self._compiler.dataclass(cls).decode
        try:
            obj = _unpackb(
                memoryview(data)[1:], raw=False, use_list=False, strict_map_key=False, timestamp=0
            )
        except Exception as exc:  # msgpack raises many types (ExtraData, FormatError, ...)
            raise DecodeError(f"{self.name}: malformed msgpack ({type(exc).__name__})") from None
        try:
            return dec(obj)  # type: ignore[no-any-return]
        except _Invalid as exc:
            name = self._by_id[tid].__name__
            raise DecodeError(f"{self.name}: {exc.path(name)}: {exc}") from None
        except Exception as exc:  # defensive: nothing but DecodeError may leave decode()
            raise DecodeError(
                f"{self.name}: invalid {self._by_id[tid].__name__} ({type(exc).__name__})"
            ) from None

    def check_schemas(self) -> None:
        """Compile every registered schema now; raises ``LocalProtocolError`` on a bad one.

        Call from a test (or at the end of a messages module) to catch schema mistakes early.
        """
        for cls in self._by_id.values():
            self._compiler.dataclass(cls)
