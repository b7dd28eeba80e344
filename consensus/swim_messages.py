"""SWIM wire messages: frozen dataclasses under SWIM's own one-byte type ids.

Encoded with ``consensus.codec``: one type byte, then a msgpack array of the fields in
declaration order. ``SwimMsgType``, ``UpdateKind`` and ``MemberStatus`` are **append-only**: their
numbers are the protocol — never renumber, never reuse a retired number, add fields only at the
end of a class.

Two paths (as in memberlist's transport):

- packets (best-effort datagrams, one message each, at most ``SwimConfig.packet_budget`` bytes):
  ``Ping``, ``IndirectPing``, ``Ack``, ``Nack``, ``Gossip``; each carries piggybacked ``Update``s;
- streams (reliable, e.g. TCP): ``PushPull``, a full-state exchange (request, then response).
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass

import msgpack

from consensus.codec import I64, U8, U16, U32, Codec
from consensus.core import NodeId


class SwimMsgType(enum.IntEnum):
    """Type byte of each SWIM message. APPEND-ONLY: the numbers are the protocol."""

    PING = 1
    INDIRECT_PING = 2
    ACK = 3
    NACK = 4
    GOSSIP = 5
    PUSH_PULL = 6


class UpdateKind(enum.IntEnum):
    """What a piggybacked update says about a member. APPEND-ONLY."""

    ALIVE = 1
    SUSPECT = 2
    DEAD = 3


class MemberStatus(enum.IntEnum):
    """A member's liveness as one node sees it. APPEND-ONLY."""

    ALIVE = 1
    SUSPECT = 2
    DEAD = 3
    LEFT = 4


STREAM_MAX_SIZE = 4 * 1024 * 1024
"""Hard limit on one encoded frame (a push-pull of thousands of members fits)."""

SWIM_CODEC: Codec[object] = Codec("swim", max_size=STREAM_MAX_SIZE)


@dataclass(frozen=True, slots=True)
class Meta:
    """A member's metadata, owned and versioned by the member itself.

    Mappings are stored as sorted tuples of pairs so the value is hashable and its encoding
    deterministic; build one with ``Meta.create``. Its encoded size is bounded by
    ``SwimConfig.meta_budget`` (checked by the core).
    """

    address: str = ""
    """``host:port`` of the member's SWIM endpoint (datagrams and streams)."""
    ports: tuple[tuple[str, U16], ...] = ()
    """Other services by name, sorted: ``(("api", 8080), ("raft", 7001))``."""
    tier: str = ""
    """Capability tier: ``light``, ``standard``, ``heavy`` (empty when unknown)."""
    cpu_load: U8 = 0
    """CPU load in percent."""
    mem_load: U8 = 0
    """Memory use in percent."""
    models: tuple[str, ...] = ()
    """Models held, sorted."""
    links: tuple[tuple[str, bool], ...] = ()
    """Link kinds and whether each is up, sorted: ``(("cellular", False), ("wifi", True))``."""
    battery: I64 = -1
    """Battery charge in percent; -1 for a device on mains power only."""
    on_battery: bool = False
    """True while the device runs from its (discharging) battery."""
    providers: tuple[str, ...] = ()
    """onnxruntime execution providers available, sorted (``CUDAExecutionProvider``, ...)."""

    @classmethod
    def create(
        cls,
        address: str,
        *,
        ports: dict[str, int] | None = None,
        tier: str = "",
        cpu_load: int = 0,
        mem_load: int = 0,
        models: tuple[str, ...] | list[str] = (),
        links: dict[str, bool] | None = None,
    ) -> Meta:
        """Build a ``Meta`` from plain mappings (sorted here)."""
        return cls(
            address=address,
            ports=tuple(sorted((ports or {}).items())),
            tier=tier,
            cpu_load=cpu_load,
            mem_load=mem_load,
            models=tuple(sorted(models)),
            links=tuple(sorted((links or {}).items())),
        )


@dataclass(frozen=True, slots=True)
class Update:
    """One piece of gossip about ``node``.

    - ALIVE: ``node`` is alive at (``incarnation``, ``meta_version``) with ``meta``;
      ``source`` is the node itself.
    - SUSPECT: ``source`` suspects ``node`` at ``incarnation`` (``meta`` is None).
    - DEAD: ``source`` declares ``node`` dead at ``incarnation``; ``source == node`` means it left.
    """

    kind: UpdateKind
    node: NodeId
    incarnation: U32
    source: NodeId
    meta_version: U32 = 0
    meta: Meta | None = None


@SWIM_CODEC.register(SwimMsgType.PING)
@dataclass(frozen=True, slots=True)
class Ping:
    """Direct probe of ``target``; answered with ``Ack(seq)`` sent to ``source_addr``."""

    seq: U32
    target: NodeId
    source: NodeId
    source_addr: str
    updates: tuple[Update, ...] = ()


@SWIM_CODEC.register(SwimMsgType.INDIRECT_PING)
@dataclass(frozen=True, slots=True)
class IndirectPing:
    """Ask the receiver to probe ``target`` for ``source``; it relays an ``Ack(seq)`` on success,
    or, when ``nack`` is set, a ``Nack(seq)`` if the target did not answer in time."""

    seq: U32
    target: NodeId
    target_addr: str
    source: NodeId
    source_addr: str
    nack: bool
    updates: tuple[Update, ...] = ()


@SWIM_CODEC.register(SwimMsgType.ACK)
@dataclass(frozen=True, slots=True)
class Ack:
    """Answer to ``Ping(seq)`` (or relayed answer to ``IndirectPing(seq)``)."""

    seq: U32
    source: NodeId
    updates: tuple[Update, ...] = ()


@SWIM_CODEC.register(SwimMsgType.NACK)
@dataclass(frozen=True, slots=True)
class Nack:
    """Lifeguard: the indirect prober ``source`` got no answer from the target of ``seq``."""

    seq: U32
    source: NodeId
    updates: tuple[Update, ...] = ()


@SWIM_CODEC.register(SwimMsgType.GOSSIP)
@dataclass(frozen=True, slots=True)
class Gossip:
    """Updates sent on the gossip interval, without a probe."""

    source: NodeId
    updates: tuple[Update, ...] = ()


@dataclass(frozen=True, slots=True)
class MemberState:
    """One member's full record, as exchanged by push-pull."""

    node: NodeId
    status: MemberStatus
    incarnation: U32
    meta_version: U32
    meta: Meta


@SWIM_CODEC.register(SwimMsgType.PUSH_PULL)
@dataclass(frozen=True, slots=True)
class PushPull:
    """Full-state anti-entropy over a stream: a request (``response=False``) is answered with the
    receiver's own state (``response=True``); both sides merge what they receive. ``join`` is set
    on a new node's first exchange with a seed."""

    source: NodeId
    source_addr: str
    join: bool
    response: bool
    members: tuple[MemberState, ...]


PacketMsg = Ping | IndirectPing | Ack | Nack | Gossip
"""Messages of the best-effort packet path."""

SwimMessage = Ping | IndirectPing | Ack | Nack | Gossip | PushPull
"""Every message a SWIM core steps or sends."""

SWIM_CODEC.check_schemas()

_EMPTY_GOSSIP_SIZE = len(SWIM_CODEC.encode(Gossip("", ())))
_EMPTY_META_SIZE = len(
    SWIM_CODEC.encode(Gossip("", (Update(UpdateKind.ALIVE, "", 0, "", 0, Meta()),)))
)


def update_size(update: Update) -> int:
    """Bytes ``update`` adds to a packet's update list (exact for lists of up to 15 updates;
    longer lists add at most 2 bytes of array header in total)."""
    return len(SWIM_CODEC.encode(Gossip("", (update,)))) - _EMPTY_GOSSIP_SIZE


def meta_size(meta: Meta) -> int:
    """Encoded bytes of ``meta`` beyond an empty ``Meta()`` (checked against the meta budget)."""
    return (
        len(SWIM_CODEC.encode(Gossip("", (Update(UpdateKind.ALIVE, "", 0, "", 0, meta),))))
        - _EMPTY_META_SIZE
    )


PACKET_FIXED_OVERHEAD = 12
"""Upper bound of a packet's bytes besides its strings and updates: type byte, array header,
a uint32 seq, a bool and the update list's header."""


def packet_base_size(msg: PacketMsg) -> int:
    """An upper bound on the encoded size of ``msg`` without its updates (cheap: no encoding).

    Each string costs its UTF-8 length plus at most 3 header bytes (msgpack str16).
    """
    total = PACKET_FIXED_OVERHEAD
    for name in msg.__dataclass_fields__:
        value = getattr(msg, name)
        if type(value) is str:
            total += len(value.encode()) + 3
    return total


def _int_size(v: int) -> int:
    """Bytes msgpack uses for a non-negative int."""
    if v < 128:
        return 1
    if v < 2**8:
        return 2
    if v < 2**16:
        return 3
    return 5 if v < 2**32 else 9


def _str_size(s: str) -> int:
    """Bytes msgpack uses for a str."""
    n = len(s.encode())
    if n < 32:
        return 1 + n
    return (2 if n < 2**8 else 3 if n < 2**16 else 5) + n


def _array_header_size(n: int) -> int:
    return 1 if n < 16 else 3 if n < 2**16 else 5


_EMPTY_META_BYTES = len(msgpack.packb(["", [], "", 0, 0, [], [], -1, False, []]))  # Meta() encoded


@functools.lru_cache(maxsize=4096)
def _meta_bytes(meta: Meta) -> int:
    return _EMPTY_META_BYTES + meta_size(meta)


def member_states_size(states: tuple[MemberState, ...]) -> int:
    """Exact encoded bytes of ``states`` as a msgpack array (metadata sizes are cached)."""
    total = _array_header_size(len(states))
    for s in states:
        total += 2 + _str_size(s.node) + _int_size(s.incarnation) + _int_size(s.meta_version)
        total += _meta_bytes(s.meta)
    return total


def push_pull_size(msg: PushPull, states_size: int | None = None) -> int:
    """The exact encoded size of ``msg``, computed without encoding it; ``states_size`` is
    ``member_states_size(msg.members)`` when the caller has it cached."""
    if states_size is None:
        states_size = member_states_size(msg.members)
    return 4 + _str_size(msg.source) + _str_size(msg.source_addr) + states_size


def with_updates(msg: PacketMsg, updates: tuple[Update, ...]) -> PacketMsg:
    """A copy of ``msg`` with its ``updates`` (every packet type's last field) replaced."""
    values = [getattr(msg, f) for f in msg.__dataclass_fields__]
    values[-1] = updates
    return type(msg)(*values)


def encode(msg: SwimMessage) -> bytes:
    """Encode one SWIM message (``EncodeError`` on schema mismatch)."""
    return SWIM_CODEC.encode(msg)


def decode(data: bytes) -> SwimMessage:
    """Decode one SWIM frame; raises only ``DecodeError``."""
    return SWIM_CODEC.decode(data)  # type: ignore[return-value]
