"""The address a node tells its peers, when it listens on a wildcard address (``0.0.0.0``, ``::``).

Peers reach a member at the address in its SWIM metadata, so a node must never advertise
``0.0.0.0:8471``: a peer would ping itself. With ``mesh.advertise`` unset and a wildcard
``mesh.host`` (the default), the host part is guessed, first that works:

1. the local address of the route towards the first reachable contact: ``mesh.seeds``, then the
   join token's address (the way we already talk to the mesh). A UDP ``connect`` picks the
   route; no packet is sent;
2. the first private IPv4 address of this machine's interfaces (RFC 1918 and friends, not
   loopback nor link-local), then any other non-loopback IPv4 address;
3. ``127.0.0.1`` (a machine with no network: the mesh can only be local anyway).

A device with several networks should set ``mesh.advertise`` (the guess is logged at start).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable, Mapping

from moltmesh.discovery.interfaces import host_ipv4
from moltmesh.mesh.tokens import split_address

WILDCARDS = ("0.0.0.0", "::", "")


def is_wildcard(host: str) -> bool:
    return host in WILDCARDS


async def guess_host(
    contacts: Iterable[str], interfaces: Mapping[str, list[str]] | None = None
) -> str:
    """The host part to advertise for a wildcard listener (see the module docstring).

    ``contacts`` are ``host:port`` strings (unparsable or unresolvable ones are skipped);
    ``interfaces`` maps interface names to IPv4 addresses (default: the machine's own).
    """
    for contact in contacts:
        source = await _route_source(contact)
        if source is not None:
            return source
    return first_interface_address(host_ipv4() if interfaces is None else interfaces)


def first_interface_address(interfaces: Mapping[str, list[str]]) -> str:
    """The first private, then the first other usable IPv4 address; else ``127.0.0.1``."""
    usable = []
    for ips in interfaces.values():
        for ip in ips:
            addr = ipaddress.ip_address(ip)
            if not (addr.is_loopback or addr.is_link_local or addr.is_unspecified):
                usable.append(addr)
    private = [a for a in usable if a.is_private]
    chosen = (private or usable)[:1]
    return str(chosen[0]) if chosen else "127.0.0.1"


async def _route_source(contact: str) -> str | None:
    """Our address on the route to ``contact``, or None if it does not resolve or route."""
    try:
        host, port = split_address(contact)
    except ValueError:
        return None
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except (OSError, UnicodeError):
        return None
    for family, _, _, _, sockaddr in infos:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            try:
                probe.connect(sockaddr)  # chooses the route; sends nothing
            except OSError:
                continue
            source = probe.getsockname()[0]
        if not is_wildcard(source):
            return source
    return None
