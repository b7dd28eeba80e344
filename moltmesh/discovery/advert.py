"""What a node announces over mDNS, and what a browser makes of it: pure data, no sockets.

A node registers one service instance ``<node id>._moltmesh._tcp.local.`` whose TXT record
carries the keys below (RFC 6763 style: short keys, ``txtvers`` first). ``decode_txt`` is strict
about the keys it knows and ignores keys it does not, so a later version may add keys without
breaking older browsers; a record it cannot trust raises ``MalformedAdvert`` with the reason.

TXT keys (append-only; renaming one is a protocol change):

=========  ==================================================================
txtvers    version of this TXT layout (``TXT_VERSION``)
node       node id (the instance label must be the same string)
mesh       mesh id
ca         fingerprint of the mesh CA's certificate
mport      mesh port (SWIM UDP and TLS TCP), 1..65535
aport      HTTP API port, 0 when the API is not offered to the LAN
proto      wire protocol version the node speaks
=========  ==================================================================
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass

SERVICE_TYPE = "_moltmesh._tcp.local."
TXT_VERSION = 1
MAX_TOKEN_CHARS = 63  # a DNS label's limit; node ids are the instance label
_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*\Z")
_FINGERPRINT = re.compile(r"[A-Za-z0-9:+/=_-]{1,128}\Z")


class MalformedAdvert(ValueError):
    """A TXT record that cannot be trusted as a moltmesh advert; the message says why."""


@dataclass(frozen=True, slots=True)
class Advert:
    """What one node announces about itself. ``Discovery`` registers it; browsers decode it."""

    node_id: str
    mesh_id: str
    ca_fingerprint: str
    mesh_port: int
    api_port: int = 0
    protocol: int = 1

    def __post_init__(self) -> None:
        _check_token("node", self.node_id)
        _check_token("mesh", self.mesh_id)
        if not _FINGERPRINT.match(self.ca_fingerprint):
            raise MalformedAdvert(
                f"ca fingerprint {self.ca_fingerprint!r} is not a printable token"
            )
        if not 1 <= self.mesh_port <= 65535:
            raise MalformedAdvert(f"mport {self.mesh_port} is not in 1..65535")
        if not 0 <= self.api_port <= 65535:
            raise MalformedAdvert(f"aport {self.api_port} is not in 0..65535")
        if self.protocol < 1:
            raise MalformedAdvert(f"proto {self.protocol} is not a positive integer")

    @property
    def instance_name(self) -> str:
        """The mDNS service instance name: ``<node id>._moltmesh._tcp.local.``."""
        return f"{self.node_id}.{SERVICE_TYPE}"

    @property
    def server(self) -> str:
        """The mDNS host name the node's address records are published under."""
        return f"moltmesh-{self.node_id}.local."

    def same_mesh(self, other: Advert) -> bool:
        """True when ``other`` claims the same mesh id and the same CA: a join candidate."""
        return self.mesh_id == other.mesh_id and self.ca_fingerprint == other.ca_fingerprint


def _check_token(key: str, value: str) -> None:
    if not (isinstance(value, str) and len(value) <= MAX_TOKEN_CHARS and _TOKEN.match(value)):
        raise MalformedAdvert(f"{key} {value!r} is not a token of 1..{MAX_TOKEN_CHARS} chars")


def encode_txt(advert: Advert) -> dict[str, str]:
    """The TXT properties for ``advert`` (python-zeroconf encodes them to bytes)."""
    return {
        "txtvers": str(TXT_VERSION),
        "node": advert.node_id,
        "mesh": advert.mesh_id,
        "ca": advert.ca_fingerprint,
        "mport": str(advert.mesh_port),
        "aport": str(advert.api_port),
        "proto": str(advert.protocol),
    }


def decode_txt(properties: Mapping[bytes, bytes | None], instance_name: str) -> Advert:
    """Decode a peer's TXT properties into an ``Advert``, or raise ``MalformedAdvert``.

    ``instance_name`` is the service name the record was found under; its first label must be
    the advertised node id, so one peer cannot answer under another's name. Unknown keys are
    ignored; a missing, empty, non-UTF-8 or out-of-range known key is malformed.
    """
    props: dict[str, str] = {}
    for raw_key, raw_value in properties.items():
        try:
            key = raw_key.decode("ascii").lower()
            value = None if raw_value is None else raw_value.decode("utf-8")
        except (UnicodeDecodeError, AttributeError) as e:
            raise MalformedAdvert(f"TXT key or value is not text: {raw_key!r}") from e
        if value is not None:
            props[key] = value
    version = _int(props, "txtvers")
    if version != TXT_VERSION:
        raise MalformedAdvert(f"txtvers {version} is not {TXT_VERSION}")
    advert = Advert(
        node_id=_str(props, "node"),
        mesh_id=_str(props, "mesh"),
        ca_fingerprint=_str(props, "ca"),
        mesh_port=_int(props, "mport"),
        api_port=_int(props, "aport"),
        protocol=_int(props, "proto"),
    )
    if instance_name != advert.instance_name:
        raise MalformedAdvert(
            f"instance {instance_name!r} does not carry the advertised node id {advert.node_id!r}"
        )
    return advert


def _str(props: Mapping[str, str], key: str) -> str:
    value = props.get(key)
    if not value:
        raise MalformedAdvert(f"TXT key {key!r} is missing or empty")
    return value


def _int(props: Mapping[str, str], key: str) -> int:
    value = _str(props, key)
    if not value.isascii() or not value.isdigit() or len(value) > 9:
        raise MalformedAdvert(f"TXT key {key!r} = {value!r} is not a small non-negative integer")
    return int(value)


@dataclass(frozen=True, slots=True)
class Candidate:
    """A peer of our mesh seen by mDNS: a hint where to try joining, never proof of membership.

    ``addresses`` are the IPv4 addresses the peer announced (sorted); the mesh layer must still
    admit the peer through its authenticated path before trusting anything it says.
    """

    advert: Advert
    addresses: tuple[str, ...]

    @property
    def node_id(self) -> str:
        return self.advert.node_id

    @property
    def endpoints(self) -> tuple[str, ...]:
        """``host:port`` of the peer's mesh port at each announced address (seed-shaped)."""
        return tuple(f"{address}:{self.advert.mesh_port}" for address in self.addresses)


class DiscoveryEventKind(enum.StrEnum):
    FOUND = "found"  # a peer of our mesh appeared
    UPDATED = "updated"  # its ports, addresses or protocol changed
    GOODBYE = "goodbye"  # it unregistered cleanly (a cut link produces none; SWIM sees it)


@dataclass(frozen=True, slots=True)
class DiscoveryEvent:
    """One change in the set of candidates; ``at`` is ``time.monotonic()`` when it was decoded."""

    kind: DiscoveryEventKind
    candidate: Candidate
    at: float
