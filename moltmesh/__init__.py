"""moltmesh: a peer-to-peer mesh for AI inference on edge devices.

``import moltmesh`` stays light: ``Node`` and ``NodeConfig`` load on first use, so an app (or the
simulator) that imports ``moltmesh`` does not pull in aiohttp, zeroconf or onnxruntime until it
makes a node.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Node", "NodeConfig", "__version__", "load_config"]

if TYPE_CHECKING:
    from moltmesh.config import NodeConfig, load_config
    from moltmesh.node import Node


def __getattr__(name: str) -> Any:
    if name == "Node":
        from moltmesh.node import Node

        return Node
    if name in ("NodeConfig", "load_config"):
        from moltmesh import config

        return getattr(config, name)
    raise AttributeError(f"module 'moltmesh' has no attribute {name!r}")
