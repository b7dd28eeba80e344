import stat
from pathlib import Path

import pytest

from moltmesh.identity import (
    IdentityError,
    load_or_create_api_token,
    load_or_create_identity,
    token_matches,
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_identity_is_created_once_and_stable(tmp_path: Path):
    data = tmp_path / "data"
    first = load_or_create_identity(data)
    again = load_or_create_identity(data)
    assert first.node_id == again.node_id
    assert len(first.node_id) == 16 and first.node_id.isalnum()
    assert mode(data) == 0o700
    assert mode(data / "node.key") == 0o600
    assert load_or_create_identity(tmp_path / "other").node_id != first.node_id


def test_token_is_created_once_private_and_compared_safely(tmp_path: Path):
    token, created = load_or_create_api_token(tmp_path)
    assert created and len(token) >= 32
    assert mode(tmp_path / "api-token") == 0o600
    assert load_or_create_api_token(tmp_path) == (token, False)
    assert token_matches(token, token)
    assert not token_matches(token, token[:-1] + "x")


def test_corrupt_key_is_reported_by_name(tmp_path: Path):
    (tmp_path / "node.key").write_text("not a key")
    with pytest.raises(IdentityError, match=r"node\.key"):
        load_or_create_identity(tmp_path)


def test_unusable_token_is_reported(tmp_path: Path):
    (tmp_path / "api-token").write_text("short\n")
    with pytest.raises(IdentityError, match="api-token"):
        load_or_create_api_token(tmp_path)


def test_a_new_token_never_looks_like_an_option(tmp_path: Path, monkeypatch):
    """A random urlsafe token starts with "-" one time in 64: `moltmesh infer --token TOKEN`
    then failed with "expected one argument"."""
    import secrets

    from moltmesh.cli import build_parser

    monkeypatch.setattr(secrets, "token_urlsafe", lambda n: "-" + "a" * 42)
    token, created = load_or_create_api_token(tmp_path)
    assert created and not token.startswith("-")
    args = build_parser().parse_args(["infer", "tiny", "x.npy", "--token", token])
    assert args.token == token


def test_a_private_file_that_cannot_be_written_is_named(tmp_path: Path, monkeypatch):
    import errno
    import os

    from moltmesh import identity

    real_write = os.write
    calls = []

    def short_then_full(fd: int, data) -> int:  # type: ignore[no-untyped-def]
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, bytes(data[:3]))  # a short write
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(identity.os, "write", short_then_full)
    target = tmp_path / "api-url"
    with pytest.raises(OSError, match="No space left on device") as raised:
        identity.write_private(target, b"http://127.0.0.1:8470\n")
    assert str(target) in str(raised.value) and calls[1] == len(b"http://127.0.0.1:8470\n") - 3
    assert list(tmp_path.iterdir()) == []  # no file, no temporary file
    monkeypatch.setattr(identity.os, "write", real_write)
    identity.write_private(target, b"x" * 100_000)
    assert target.read_bytes() == b"x" * 100_000
