"""The mesh wire envelope and its framing.

Every message between nodes travels in one ``Envelope``: protocol version, mesh id, a channel
byte saying which protocol the body belongs to, the sender's node id, and the body (the bytes of
that protocol's own codec, e.g. ``consensus.codec``). Encoded as a msgpack array of those five
values, in that order.

Framing: on TCP each envelope is preceded by its length (4 bytes, big endian); on UDP one datagram
is one envelope (sealed, see ``moltmesh.mesh.seal``). Both have a hard size limit.

Contract: ``decode_envelope``, ``FrameDecoder.feed`` and ``read_frame`` raise only
``EnvelopeError`` (a ``consensus.errors.DecodeError``, i.e. a ``RemoteProtocolError``) on bad
input, whatever the bytes; its ``drop`` says which ``DropReason`` to count.
``encode_envelope`` raises ``LocalProtocolError`` when *we* try to send something invalid.
"""

from __future__ import annotations

import asyncio
import enum
import struct
from dataclasses import dataclass

import msgpack

from consensus.errors import DecodeError, LocalProtocolError
from moltmesh.mesh.drops import DropReason

PROTOCOL_VERSION = 2
"""Version of the envelope and of the channel protocols (framing, and what a channel carries:
2 since Raft entries may hold a KV ``Batch``, which version 1 replicas would reject while the
others apply it); bump on incompatible change. Nodes of different versions do not talk."""

MAX_FRAME_BYTES = 8 * 2**20
"""Default hard limit on one TCP frame's envelope (a push-pull or a model's tensors fit)."""

MAX_DATAGRAM_BYTES = 2048
"""Default hard limit on one UDP datagram, sealing included (SWIM packets budget 1400 bytes)."""

MAX_ID_CHARS = 64
"""Longest mesh id or node id accepted in an envelope."""

LENGTH_PREFIX = struct.Struct("!I")


class Channel(enum.IntEnum):
    """Which protocol an envelope's body belongs to. APPEND-ONLY: the numbers are the protocol."""

    SWIM = 1
    RAFT = 2
    KV = 3
    INFER = 4
    JOIN = 5  # admission of a new node (uncredentialed TLS, token proof)
    ADMIN = 6  # key ring changes, revocations, certificate renewal (mutual TLS)


class EnvelopeError(DecodeError):
    """Input from the network that is not a valid envelope for us; ``drop`` is why."""

    def __init__(self, drop: DropReason, reason: str) -> None:
        super().__init__(reason)
        self.drop = drop


@dataclass(frozen=True, slots=True)
class Envelope:
    mesh_id: str
    channel: Channel
    sender: str
    body: bytes
    version: int = PROTOCOL_VERSION


def _check_id(value: object, what: str) -> str:
    if type(value) is not str or not 0 < len(value) <= MAX_ID_CHARS or not value.isprintable():
        raise ValueError(f"{what} must be a printable string of 1..{MAX_ID_CHARS} chars")
    return value


def encode_envelope(env: Envelope, max_size: int = MAX_FRAME_BYTES) -> bytes:
    """The bytes of ``env``; ``LocalProtocolError`` if a field is invalid or it is too large."""
    try:
        _check_id(env.mesh_id, "mesh id")
        _check_id(env.sender, "sender")
        if not isinstance(env.channel, Channel):
            raise ValueError(f"channel must be a Channel, got {env.channel!r}")
        if not isinstance(env.body, bytes | bytearray | memoryview):
            raise ValueError("body must be bytes")
    except ValueError as e:
        raise LocalProtocolError(f"envelope: {e}") from None
    data = msgpack.packb(
        [env.version, env.mesh_id, int(env.channel), env.sender, bytes(env.body)],
        use_bin_type=True,
    )
    if len(data) > max_size:
        raise LocalProtocolError(f"envelope of {len(data)} bytes > limit {max_size}")
    return data


def decode_envelope(
    data: bytes | bytearray | memoryview,
    mesh_id: str | None = None,
    max_size: int = MAX_FRAME_BYTES,
) -> Envelope:
    """Decode one envelope; with ``mesh_id``, refuse any other mesh (``DropReason.WRONG_MESH``)."""
    if len(data) > max_size:
        raise EnvelopeError(DropReason.OVERSIZE, f"envelope of {len(data)} bytes > {max_size}")
    try:
        obj = msgpack.unpackb(bytes(data), raw=False, use_list=True, strict_map_key=True)
    except Exception as exc:  # msgpack raises many types (ExtraData, FormatError, ValueError...)
        reason = f"malformed msgpack ({type(exc).__name__})"
        raise EnvelopeError(DropReason.GARBAGE, reason) from None
    if type(obj) is not list or len(obj) != 5:
        raise EnvelopeError(DropReason.GARBAGE, "an envelope is an array of 5 values")
    version, mesh, channel, sender, body = obj
    if type(version) is not int or version != PROTOCOL_VERSION:
        raise EnvelopeError(DropReason.GARBAGE, f"unsupported protocol version {version!r}")
    try:
        _check_id(mesh, "mesh id")
        _check_id(sender, "sender")
    except ValueError as e:
        raise EnvelopeError(DropReason.GARBAGE, str(e)) from None
    if type(channel) is not int or channel not in Channel._value2member_map_:
        raise EnvelopeError(DropReason.GARBAGE, f"unknown channel {channel!r}")
    if type(body) is not bytes:
        raise EnvelopeError(DropReason.GARBAGE, "body must be bytes")
    if mesh_id is not None and mesh != mesh_id:
        raise EnvelopeError(DropReason.WRONG_MESH, f"envelope for mesh {mesh!r}")
    return Envelope(mesh, Channel(channel), sender, body, version)


def encode_frame(env: Envelope, max_size: int = MAX_FRAME_BYTES) -> bytes:
    """A length-prefixed TCP frame holding ``env``."""
    data = encode_envelope(env, max_size)
    return LENGTH_PREFIX.pack(len(data)) + data


class FrameDecoder:
    """Sans-I/O splitter of a TCP byte stream into envelope payloads (length prefix removed).

    After an ``EnvelopeError`` the stream cannot be resynchronised: close the connection.
    """

    def __init__(self, max_size: int = MAX_FRAME_BYTES) -> None:
        self.max_size = max_size
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """Append ``data``; return every complete payload now available, in order."""
        self._buf += data
        out: list[bytes] = []
        while len(self._buf) >= LENGTH_PREFIX.size:
            (n,) = LENGTH_PREFIX.unpack_from(self._buf)
            if n > self.max_size:
                raise EnvelopeError(DropReason.OVERSIZE, f"frame of {n} bytes > {self.max_size}")
            if len(self._buf) < LENGTH_PREFIX.size + n:
                break
            out.append(bytes(self._buf[LENGTH_PREFIX.size : LENGTH_PREFIX.size + n]))
            del self._buf[: LENGTH_PREFIX.size + n]
        return out

    @property
    def pending(self) -> int:
        """Bytes received that do not yet form a whole frame (non-zero at EOF = truncated)."""
        return len(self._buf)


async def read_frame(reader: asyncio.StreamReader, max_size: int = MAX_FRAME_BYTES) -> bytes | None:
    """Read one length-prefixed payload; ``None`` on a clean EOF between frames.

    Raises ``EnvelopeError`` for an oversize length or a frame cut short by EOF. Timeouts and
    connection errors (``OSError``) are the caller's to handle.
    """
    try:
        head = await reader.readexactly(LENGTH_PREFIX.size)
    except asyncio.IncompleteReadError as e:
        if not e.partial:
            return None
        reason = "connection closed inside a length prefix"
        raise EnvelopeError(DropReason.GARBAGE, reason) from None
    (n,) = LENGTH_PREFIX.unpack(head)
    if n > max_size:
        raise EnvelopeError(DropReason.OVERSIZE, f"frame of {n} bytes > {max_size}")
    try:
        return await reader.readexactly(n)
    except asyncio.IncompleteReadError as e:
        raise EnvelopeError(
            DropReason.GARBAGE, f"frame truncated: {len(e.partial)} of {n} bytes"
        ) from None
