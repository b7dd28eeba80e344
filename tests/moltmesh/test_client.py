"""``moltmesh.client``: the CLI's v2 client against a live node on loopback — BYTES tensors both
ways in both encodings, and model names that need quoting in a URL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from moltmesh import Node
from moltmesh.client import Client, ClientError
from tests.moltmesh.serving import echo_repository, serving_node


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    async with serving_node(tmp_path / "data", echo_repository(tmp_path / "repo")) as n:
        yield n


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
async def test_bytes_tensors_travel_as_v2_bytes(node: Node, binary: bool):
    client = Client(node.api_url, node.api_token)
    texts = ["ab", "", "✓ done", "x" * 300]
    for values in ([t.encode() for t in texts], texts):  # bytes or str elements
        sent = np.array(values, dtype=object)
        answer = await asyncio.to_thread(client.infer, "echo", {"s": sent}, binary)
        out = answer.outputs["out"]
        assert out.shape == (4,)
        assert [v.decode() if isinstance(v, bytes) else v for v in out] == texts


@pytest.mark.parametrize("name", ["✓", "a b", "a?b", "a/b", "a#b"])
async def test_model_names_are_quoted_in_urls(node: Node, name: str):
    client = Client(node.api_url, node.api_token)
    x = {"x": np.zeros((1, 3), np.float32)}
    with pytest.raises(ClientError) as caught:
        await asyncio.to_thread(client.infer, name, x)
    assert caught.value.status == 404 and name in caught.value.message
    with pytest.raises(ClientError) as caught:
        await asyncio.to_thread(client.model_metadata, name)
    assert caught.value.status == 404 and name in caught.value.message
