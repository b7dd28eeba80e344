"""A node that serves a test model repository over its HTTP API, for API and client tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from onnx import TensorProto, helper

from moltmesh import Node, NodeConfig
from tests.models import _save, make_repository


@contextlib.asynccontextmanager
async def serving_node(
    data_dir: Path, repo: Path, configure: Callable[[NodeConfig], None] | None = None
) -> AsyncIterator[Node]:
    """A started ``Node`` serving ``repo`` only (no bundled models), its API on a free loopback
    port, one warm-up run per model (``configure`` may change the config first); stopped on
    exit."""
    config = NodeConfig(data_dir=data_dir)
    config.api.port = 0
    config.runtime.model_repository = [repo]
    config.runtime.bundled_models = False
    config.runtime.warmup_runs = 1
    if configure is not None:
        configure(config)
    async with Node(config) as node:
        yield node


def echo_repository(root: Path) -> Path:
    """The test repository (``tests.models.make_repository``) plus ``echo``: s BYTES [N] -> out
    BYTES [N], unchanged (Identity on a string tensor)."""
    repo = make_repository(root)
    graph = helper.make_graph(
        [helper.make_node("Identity", ["s"], ["out"])],
        "echo",
        [helper.make_tensor_value_info("s", TensorProto.STRING, ["N"])],
        [helper.make_tensor_value_info("out", TensorProto.STRING, ["N"])],
    )
    _save(graph, repo / "echo" / "1" / "model.onnx")
    return repo
