"""The address a wildcard listener advertises: the route to a contact, else an interface's."""

from __future__ import annotations

import pytest

from moltmesh.mesh.advertise import first_interface_address, guess_host, is_wildcard


@pytest.mark.parametrize(
    ("interfaces", "expected"),
    [
        ({"lo": ["127.0.0.1"], "eth0": ["192.168.1.20"]}, "192.168.1.20"),
        ({"wan": ["81.2.69.160"], "lan": ["10.0.0.5"]}, "10.0.0.5"),  # private first
        ({"wan": ["81.2.69.160"], "ll": ["169.254.3.4"]}, "81.2.69.160"),  # not link-local
        ({"lo": ["127.0.0.1"]}, "127.0.0.1"),
        ({}, "127.0.0.1"),
    ],
)
def test_first_interface_address(interfaces: dict[str, list[str]], expected: str) -> None:
    assert first_interface_address(interfaces) == expected


async def test_the_route_to_a_contact_wins_over_the_interfaces() -> None:
    lan = {"eth0": ["192.168.1.20"]}
    assert await guess_host(["127.0.0.1:8471"], lan) == "127.0.0.1"


async def test_unusable_contacts_fall_back_to_the_interfaces() -> None:
    lan = {"eth0": ["192.168.1.20"]}
    assert await guess_host(["no-port", "[::1]:notaport", ""], lan) == "192.168.1.20"


def test_wildcards() -> None:
    assert is_wildcard("0.0.0.0") and is_wildcard("::")
    assert not is_wildcard("127.0.0.1") and not is_wildcard("10.0.0.1")
