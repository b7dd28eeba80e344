"""What a node does against running out of descriptors and against slow clients (review9 H2, M2).

- At start it raises its soft RLIMIT_NOFILE to the hard limit (never lowers it).
- Its HTTP API closes connections that do not deliver a complete request within the header
  timeout, idle keep-alive connections after the keep-alive timeout, and refuses connections
  beyond its cap, while a normal client keeps being served.
"""

from __future__ import annotations

import logging
import resource
from collections.abc import Iterator
from pathlib import Path

import pytest

from moltmesh.config import NodeConfig
from moltmesh.node import Node, raise_open_files_limit

NOFILE = resource.RLIMIT_NOFILE


@pytest.fixture
def lowered_nofile() -> Iterator[tuple[int, int]]:
    """The soft RLIMIT_NOFILE lowered below the hard limit for the test (restored after)."""
    soft, hard = resource.getrlimit(NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 512:
        pytest.skip(f"hard RLIMIT_NOFILE {hard} leaves no room to lower the soft one")
    low = 400 if hard == resource.RLIM_INFINITY else min(hard - 1, 4095)
    resource.setrlimit(NOFILE, (low, hard))
    try:
        yield low, hard
    finally:
        resource.setrlimit(NOFILE, (soft, hard))


def test_the_soft_limit_is_raised_to_the_hard_one(lowered_nofile):
    low, hard = lowered_nofile
    got = raise_open_files_limit()
    assert got == resource.getrlimit(NOFILE)[0]
    assert got is not None and got > low
    if hard != resource.RLIM_INFINITY:
        assert got == hard


def test_it_never_lowers_and_tolerates_a_refusal(lowered_nofile, monkeypatch):
    low, _ = lowered_nofile

    def refuse(*args: object) -> None:
        raise ValueError("not allowed here")

    monkeypatch.setattr(resource, "setrlimit", refuse)
    assert raise_open_files_limit() == low  # refused: unchanged, no error
    monkeypatch.undo()
    assert raise_open_files_limit() != low
    raised = resource.getrlimit(NOFILE)[0]
    assert raise_open_files_limit() == raised  # already at the hard limit: unchanged


async def test_a_starting_node_raises_the_limit_and_logs_it(
    lowered_nofile, tmp_path: Path, caplog
) -> None:
    low, _ = lowered_nofile
    config = NodeConfig(data_dir=tmp_path / "data")
    config.runtime.bundled_models = False
    with caplog.at_level(logging.INFO, logger="moltmesh.node"):
        async with Node(config, serve_api=False):
            assert resource.getrlimit(NOFILE)[0] > low
    (started,) = [r for r in caplog.records if r.getMessage() == "node.started"]
    fields = started.__dict__["moltmesh_fields"]
    assert fields["open_files_limit_was"] == low
    assert fields["open_files_limit"] == resource.getrlimit(NOFILE)[0]
