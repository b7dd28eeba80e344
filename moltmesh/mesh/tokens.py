"""Join tokens: one line that lets one new device join, once, before it expires.

Format (as ``docker swarm join`` tokens)::

    MMTKN-1-<CA fingerprint, 52 base32 chars>-<token id, 16 hex>-<secret, 32 base32>-<host:port>

The CA fingerprint lets the joiner pin the mesh before it trusts anything; the address is where
a CA holder listens. The CA holder keeps only the SHA-256 of the secret (``TokenStore``), marks a
token used the moment it admits a node, and refuses expired ones.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from pathlib import Path

from moltmesh.identity import write_private
from moltmesh.mesh.ca import FINGERPRINT_CHARS
from moltmesh.mesh.errors import TokenError

PREFIX = "MMTKN-1"
TOKEN_ID_CHARS = 16
SECRET_CHARS = 32


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


class TokenStore:
    """The CA holder's record of tokens it issued: hashed secret, expiry, use.

    Methods are synchronous and write the file before returning, so on one event loop a token
    is consumed atomically (no await between check and mark).
    """

    def __init__(self, path: Path) -> None:
        self.path = path

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
        """Issue a token valid for ``ttl_s`` seconds from ``now_s``; expired records are pruned."""
        split_address(address)
        token_id = secrets.token_hex(TOKEN_ID_CHARS // 2)
        secret = base64.b32encode(secrets.token_bytes(20)).decode("ascii").lower()
        records = {
            k: v for k, v in self._load().items() if float(v.get("expires") or 0) > now_s
        }  # fmt: skip
        records[token_id] = {"sha256": _hash(secret), "expires": now_s + ttl_s, "used": None}
        self._save(records)
        return JoinToken(ca_fingerprint, token_id, secret, address)

    def check(self, token_id: str, now_s: float) -> None:
        """Raise ``TokenError`` unless ``token_id`` is known, unused and unexpired."""
        record = self._load().get(token_id)
        if record is None:
            raise TokenError("unknown join token")
        if record.get("used") is not None:
            raise TokenError("join token already used")
        if float(record.get("expires") or 0) <= now_s:
            raise TokenError("join token expired")

    def consume(self, token_id: str, secret: str, now_s: float, used_by: str) -> None:
        """Check the secret and mark the token used by node ``used_by``; ``TokenError`` if not."""
        self.check(token_id, now_s)
        records = self._load()
        record = records[token_id]
        if not hmac.compare_digest(str(record.get("sha256")), _hash(secret)):
            raise TokenError("wrong join token secret")
        record["used"] = now_s
        record["used_by"] = used_by
        self._save(records)
