"""A node that serves a test model repository over its HTTP API, for API and client tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from moltmesh import Node, NodeConfig


@contextlib.asynccontextmanager
async def serving_node(data_dir: Path, repo: Path) -> AsyncIterator[Node]:
    """A started ``Node`` serving ``repo`` only (no bundled models), its API on a free loopback
    port, one warm-up run per model; stopped on exit."""
    config = NodeConfig(data_dir=data_dir)
    config.api.port = 0
    config.runtime.model_repository = [repo]
    config.runtime.bundled_models = False
    config.runtime.warmup_runs = 1
    async with Node(config) as node:
        yield node
