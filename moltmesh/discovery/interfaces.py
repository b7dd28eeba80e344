"""Which network interfaces mDNS may use, from the ``discovery.interfaces`` config list.

Entries, combined in order and deduplicated:

- ``"loopback"`` (the default): 127.0.0.1 only. Development machines and tests never announce
  on the host's real network card.
- ``"all"``: every IPv4 address of every interface (what a device on a LAN wants).
- an interface name (``"eth0"``, ``"wlan0"``): that interface's IPv4 addresses.
- an IPv4 address (``"192.168.1.20"``): that address, which must belong to an interface.

Discovery is IPv4 only for now. The addresses announced to peers are the chosen ones, minus
loopback addresses when any other address was chosen (a peer cannot reach our 127.0.0.1).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import ifaddr

LOOPBACK = "loopback"
ALL = "all"


class InterfaceError(ValueError):
    """An entry of ``discovery.interfaces`` names nothing on this machine."""


@dataclass(frozen=True, slots=True)
class InterfacePlan:
    """``listen`` goes to python-zeroconf as its interface list; ``announce`` into A records."""

    listen: tuple[str, ...]
    announce: tuple[str, ...]


def host_ipv4() -> dict[str, list[str]]:
    """Interface name → its IPv4 addresses, as the OS reports them now."""
    out: dict[str, list[str]] = {}
    for adapter in ifaddr.get_adapters():
        ips = [ip.ip for ip in adapter.ips if isinstance(ip.ip, str)]
        if ips:
            out[adapter.nice_name] = ips
    return out


def plan_interfaces(
    entries: list[str], interfaces: dict[str, list[str]] | None = None
) -> InterfacePlan:
    """Resolve config ``entries`` against ``interfaces`` (default: ``host_ipv4()``).

    Raises ``InterfaceError`` naming the first entry that matches nothing, or when the list is
    empty.
    """
    if not entries:
        raise InterfaceError("discovery.interfaces is empty: name loopback, all or interfaces")
    table = host_ipv4() if interfaces is None else interfaces
    owned = {ip for ips in table.values() for ip in ips}
    chosen: list[str] = []
    for entry in entries:
        if entry == LOOPBACK:
            found = ["127.0.0.1"]
        elif entry == ALL:
            found = [ip for ips in table.values() for ip in ips]
        elif entry in table:
            found = list(table[entry])
        elif _is_ipv4(entry):
            if entry not in owned:
                raise InterfaceError(f"discovery.interfaces: no interface has address {entry}")
            found = [entry]
        else:
            raise InterfaceError(
                f"discovery.interfaces: {entry!r} is not loopback, all, an interface "
                f"({', '.join(sorted(table)) or 'none'}) or an IPv4 address"
            )
        if not found:
            raise InterfaceError(f"discovery.interfaces: {entry!r} has no IPv4 address")
        chosen.extend(ip for ip in found if ip not in chosen)
    routable = [ip for ip in chosen if not ipaddress.ip_address(ip).is_loopback]
    return InterfacePlan(listen=tuple(chosen), announce=tuple(routable or chosen))


def _is_ipv4(text: str) -> bool:
    try:
        return ipaddress.ip_address(text).version == 4
    except ValueError:
        return False
