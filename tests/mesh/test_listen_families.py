"""The mesh listener binds every address family the host resolves to that the kernel has: on a
kernel without IPv6, a wildcard host listens on IPv4 instead of failing (review11 L3)."""

from __future__ import annotations

import socket

import pytest

from moltmesh.mesh import streams


def test_a_family_the_kernel_lacks_is_skipped(monkeypatch) -> None:
    real = socket.socket

    def no_ipv6(family: int = socket.AF_INET, *args, **kwargs):  # type: ignore[no-untyped-def]
        if family == socket.AF_INET6:
            raise OSError(97, "Address family not supported by protocol")
        return real(family, *args, **kwargs)

    both = [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::", 0, 0, 0)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 0))]  # fmt: skip
    monkeypatch.setattr(streams.socket, "getaddrinfo", lambda *a, **k: both)
    monkeypatch.setattr(streams.socket, "socket", no_ipv6)
    socks = streams._listen("", 0)
    try:
        assert [s.family for s in socks] == [socket.AF_INET]
    finally:
        for s in socks:
            s.close()
    monkeypatch.setattr(streams.socket, "getaddrinfo", lambda *a, **k: both[:1])
    with pytest.raises(OSError, match="no address family"):
        streams._listen("", 0)
