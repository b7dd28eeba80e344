"""A node's identity on disk: its Ed25519 key, the node id derived from it, and the API token.

Files live in the data directory, created 0700, each file written 0600 and atomically (write to a
temporary file, fsync, rename), so a crash never leaves a half-written key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

KEY_FILE = "node.key"
TOKEN_FILE = "api-token"
API_URL_FILE = "api-url"  # written by a node while its API is up
NODE_ID_CHARS = 16  # 80 bits of the key's hash: unique among any realistic number of devices


class IdentityError(RuntimeError):
    """The data directory or a credential in it is unusable; the message says which and why."""


@dataclass(frozen=True)
class Identity:
    node_id: str
    private_key: Ed25519PrivateKey

    @property
    def public_key_bytes(self) -> bytes:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )


def node_id_for(public_key: bytes) -> str:
    """The node id of a raw Ed25519 public key: lower-case base32 of its SHA-256, 16 chars."""
    digest = hashlib.sha256(public_key).digest()
    return base64.b32encode(digest).decode("ascii").lower()[:NODE_ID_CHARS]


def ensure_data_dir(data_dir: Path) -> Path:
    """Create the data directory (0700) if needed and check it is writable."""
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise IdentityError(f"cannot create data directory {data_dir}: {e.strerror}") from e
    if not os.access(data_dir, os.W_OK):
        raise IdentityError(f"data directory {data_dir} is not writable")
    return data_dir


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically with mode 0600 (fsync before the rename). An
    ``OSError`` names ``path`` (a full disk said only "No space left on device") and leaves
    no temporary file behind."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:  # a write may be short
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise OSError(e.errno, e.strerror, str(path)) from None
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load_or_create_identity(data_dir: Path) -> Identity:
    """Load ``<data_dir>/node.key`` or create it on first start."""
    path = ensure_data_dir(data_dir) / KEY_FILE
    if path.exists():
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (ValueError, TypeError) as e:
            raise IdentityError(f"{path} is not a PEM Ed25519 private key: {e}") from e
        if not isinstance(key, Ed25519PrivateKey):
            raise IdentityError(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
    else:
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        write_private(path, pem)
    identity = Identity(node_id="", private_key=key)
    return Identity(node_id=node_id_for(identity.public_key_bytes), private_key=key)


TOKEN_PREFIX = "mm_"
"""New API tokens start with it: a token must not start with "-", which a command line would
take for an option, and a prefix lets secret scanners recognise one."""


def load_or_create_api_token(data_dir: Path) -> tuple[str, bool]:
    """Return ``(token, created)``: the token in ``<data_dir>/api-token``, made if missing."""
    path = ensure_data_dir(data_dir) / TOKEN_FILE
    if path.exists():
        token = path.read_text(encoding="ascii").strip()
        if len(token) < 16:
            raise IdentityError(f"{path} holds no usable token (delete it to make a new one)")
        return token, False
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)  # (never "-...": `--token TOKEN` parses)
    write_private(path, (token + "\n").encode("ascii"))
    return token, True


def token_matches(expected: str, presented: str) -> bool:
    """Constant-time comparison of API tokens."""
    return hmac.compare_digest(expected.encode(), presented.encode())
