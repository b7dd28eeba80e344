"""Join tokens: one line that lets one new device join, once, before it expires.

Format (as ``docker swarm join`` tokens)::

    MMTKN-1-<CA fingerprint, 52 base32 chars>-<token id, 16 hex>-<secret, 32 base32>-<host:port>

The CA fingerprint lets the joiner pin the mesh before it trusts anything; the address is where
a CA holder listens. The CA holder keeps only the SHA-256 of the secret (``TokenStore``), marks a
token used the moment it admits a node, and refuses expired ones. A token lives for a finite
``0 < ttl <= MAX_TTL_S`` seconds; a record whose expiry is not a finite number (NaN compares
false with any clock, so it would never expire) is refused as corrupt.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import hmac
import json
import math
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from moltmesh.identity import write_private
from moltmesh.mesh.ca import FINGERPRINT_CHARS
from moltmesh.mesh.errors import TokenError

PREFIX = "MMTKN-1"
TOKEN_ID_CHARS = 16
SECRET_CHARS = 32
MAX_TTL_S = 30 * 86400.0
"""Longest a join token may stay valid (30 days): a token is for enrolling a device soon, and a
forgotten one must not open the mesh for ever."""


def check_ttl(ttl_s: float) -> float:
    """``ttl_s`` if it is a finite number of seconds in ``(0, MAX_TTL_S]``, else ``ValueError``
    naming it (NaN, infinities, zero and negatives included)."""
    if not isinstance(ttl_s, int | float) or not math.isfinite(ttl_s):
        raise ValueError(f"token lifetime {ttl_s!r} is not a finite number of seconds")
    if not 0 < ttl_s <= MAX_TTL_S:
        raise ValueError(
            f"token lifetime {ttl_s:g} s is out of range: more than 0, at most {MAX_TTL_S:g} s "
            "(30 days)"
        )
    return float(ttl_s)


@dataclass(frozen=True, slots=True)
class JoinToken:
    ca_fingerprint: str
    token_id: str
    secret: str
    address: str

    def __str__(self) -> str:
        return f"{PREFIX}-{self.ca_fingerprint}-{self.token_id}-{self.secret}-{self.address}"


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` (or ``[v6]:port``) as (host, port); ``ValueError`` if malformed."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{address!r} is not host:port")
    return host.strip("[]"), int(port)


def parse_token(text: str) -> JoinToken:
    """Parse a token line; ``TokenError`` names what is wrong with it."""
    parts = text.strip().split("-", 5)
    if len(parts) != 6 or f"{parts[0]}-{parts[1]}" != PREFIX:
        raise TokenError(f"not a moltmesh join token (expected {PREFIX}-...)")
    _, _, fp, token_id, secret, address = parts
    b32 = set("abcdefghijklmnopqrstuvwxyz234567")
    if len(fp) != FINGERPRINT_CHARS or not set(fp) <= b32:
        raise TokenError("join token: bad CA fingerprint")
    if len(token_id) != TOKEN_ID_CHARS or not set(token_id) <= set("0123456789abcdef"):
        raise TokenError("join token: bad token id")
    if len(secret) != SECRET_CHARS or not set(secret) <= b32:
        raise TokenError("join token: bad secret")
    try:
        split_address(address)
    except ValueError as e:
        raise TokenError(f"join token: {e}") from None
    return JoinToken(fp, token_id, secret, address)


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def _expiry(record: object) -> float:
    """A record's expiry (seconds since the epoch), NaN when it is missing, not a number or not
    finite (the JSON file may hold ``NaN`` or ``Infinity`` literals): such a record never counts
    as valid, and pruning drops it."""
    raw = record.get("expires") if isinstance(record, dict) else None
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        return math.nan
    expires = float(raw)
    return expires if math.isfinite(expires) else math.nan


class TokenStore:
    """The CA holder's record of tokens it issued: hashed secret, expiry, use.

    Methods are synchronous and write the file before returning, so on one event loop a token
    is consumed atomically (no await between check and mark). ``create`` and ``consume`` read,
    change and write the file under an exclusive ``flock`` of ``<file>.lock``: a ``moltmesh
    mesh token`` process and the running node that consumes a token never overwrite each
    other's change (it blocks only for the other's read-modify-write, a few milliseconds).
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _load(self) -> dict[str, dict[str, float | str | None]]:
        if not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_bytes())
        except ValueError:
            raise TokenError(f"{self.path} is corrupt; delete it to forget issued tokens") from None
        return data if isinstance(data, dict) else {}

    def _save(self, records: dict[str, dict[str, float | str | None]]) -> None:
        write_private(self.path, json.dumps(records, indent=1, sort_keys=True).encode())

    def create(self, ca_fingerprint: str, address: str, ttl_s: float, now_s: float) -> JoinToken:
        """Issue a token valid for ``ttl_s`` seconds from ``now_s``; expired records are pruned.
        ``ValueError`` for a bad address, a ``ttl_s`` that ``check_ttl`` refuses, or a
        non-finite ``now_s``."""
        split_address(address)
        check_ttl(ttl_s)
        if not math.isfinite(now_s):
            raise ValueError(f"clock reading {now_s!r} is not finite")
        token_id = secrets.token_hex(TOKEN_ID_CHARS // 2)
        secret = base64.b32encode(secrets.token_bytes(20)).decode("ascii").lower()
        with self._exclusive():
            records = {
                k: v for k, v in self._load().items() if now_s < _expiry(v) <= now_s + MAX_TTL_S
            }
            records[token_id] = {"sha256": _hash(secret), "expires": now_s + ttl_s, "used": None}
            self._save(records)
        return JoinToken(ca_fingerprint, token_id, secret, address)

    def check(self, token_id: str, now_s: float) -> None:
        """Raise ``TokenError`` unless ``token_id`` is known, unused and unexpired (an expiry
        that is not finite, or further than ``MAX_TTL_S`` from ``now_s``, is refused)."""
        record = self._load().get(token_id)
        if not isinstance(record, dict):
            raise TokenError("unknown join token")
        if record.get("used") is not None:
            raise TokenError("join token already used")
        expires = _expiry(record)
        if math.isnan(expires) or expires > now_s + MAX_TTL_S:
            raise TokenError(f"join token record in {self.path} has no valid expiry")
        if not expires > now_s:  # a NaN clock reading expires every token too
            raise TokenError("join token expired")

    def consume(self, token_id: str, secret: str, now_s: float, used_by: str) -> None:
        """Check the secret and mark the token used by node ``used_by``; ``TokenError`` if not."""
        with self._exclusive():
            self.check(token_id, now_s)
            records = self._load()
            record = records[token_id]
            if not hmac.compare_digest(str(record.get("sha256")), _hash(secret)):
                raise TokenError("wrong join token secret")
            record["used"] = now_s
            record["used_by"] = used_by
            self._save(records)
