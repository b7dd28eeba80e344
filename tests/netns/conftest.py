"""Fixtures for network-namespace tests: every test here needs root, ``ip``, ``nft`` and ``tc``.

Where they are missing the tests skip with the reason; under ``CI=true`` they fail instead, so a
CI machine that silently lost its namespace support cannot pass. Leftover beds of crashed runs
are swept once per worker; each bed is torn down after its test, failed or not.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from tests.netns.bed import NetBed, sweep, unavailable_reason


def require_netns() -> None:
    """Skip (or, under CI=true, fail) when namespaces cannot be used here."""
    reason = unavailable_reason()
    if reason is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and the namespace tests cannot run: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def _swept() -> None:
    if unavailable_reason() is None:
        sweep()


@pytest.fixture(autouse=True)
def _netns_available(_swept: None) -> None:
    require_netns()


@pytest.fixture
def make_bed() -> Iterator[Callable[[int], NetBed]]:
    """``make_bed(n)`` → a bed of n hosts, torn down after the test whatever its outcome."""
    beds: list[NetBed] = []

    def make(n: int) -> NetBed:
        bed = NetBed(n)
        beds.append(bed)
        bed.up()
        return bed

    yield make
    for bed in beds:
        bed.down()
