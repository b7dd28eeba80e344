"""The embedding API: ``async with Node(config) as node: await node.infer(...)``."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from moltmesh import Node, NodeConfig
from moltmesh.errors import BadRequest, DeadlineExceeded, NotReady, Overloaded
from runtimes.errors import InvalidInput, ModelNotFound, VersionNotFound
from tests.models import tiny_reference

SLOW_BATCH = 4096  # ~0.1–1 s through the slow model on one core


def config_for(tmp_path: Path, model_repo: Path, **runtime: object) -> NodeConfig:
    config = NodeConfig(data_dir=tmp_path / "data")
    config.runtime.model_repository = [model_repo]
    config.runtime.bundled_models = False
    config.runtime.warmup_runs = 1
    for key, value in runtime.items():
        setattr(config.runtime, key, value)
    return config


async def wait_until(predicate, timeout: float = 10.0) -> None:
    """Wait for an observed state change of the node (polling its counters)."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.002)


def slow_input() -> np.ndarray:
    return np.ones((SLOW_BATCH, 512), dtype=np.float32)


async def test_infer_without_http(tmp_path: Path, model_repo: Path):
    x = np.array([[1, 2, 3], [0, -1, 0.5]], dtype=np.float32)
    async with Node(config_for(tmp_path, model_repo), serve_api=False) as node:
        assert node.api_url is None
        result = await node.infer("tiny", {"x": x})
        again = await node.infer("tiny", x, version="1", outputs=["probs"])
    expected = tiny_reference(x)
    np.testing.assert_allclose(result.outputs["probs"], expected["probs"], rtol=1e-5)
    np.testing.assert_allclose(result.outputs["logits"], expected["logits"], rtol=1e-5)
    assert (result.model, result.version, result.route, result.variant) == (
        "tiny",
        "2",
        "local",
        "full",
    )
    assert result.node == node.node_id
    assert again.version == "1" and list(again.outputs) == ["probs"]


async def test_errors_are_typed(tmp_path: Path, model_repo: Path):
    async with Node(config_for(tmp_path, model_repo), serve_api=False) as node:
        with pytest.raises(ModelNotFound):
            await node.infer("nope", {"x": np.zeros((1, 3), np.float32)})
        with pytest.raises(VersionNotFound):
            await node.infer("tiny", {"x": np.zeros((1, 3), np.float32)}, version="9")
        with pytest.raises(InvalidInput):
            await node.infer("tiny", {"x": np.zeros((1, 4), np.float32)})
        with pytest.raises(BadRequest):
            await node.infer("tiny", {"x": np.zeros((1, 3), np.float32)}, urgency=2.0)


async def test_full_queue_is_refused_with_retry_hint(tmp_path: Path, model_repo: Path):
    config = config_for(tmp_path, model_repo, max_inflight=1, max_queue=1)
    async with Node(config, serve_api=False) as node:
        running = asyncio.create_task(node.infer("slow", slow_input()))
        await wait_until(lambda: node.service.inflight == 1)
        queued = asyncio.create_task(node.infer("slow", slow_input()))
        await wait_until(lambda: node.service.queue_depth == 1)
        with pytest.raises(Overloaded) as refused:
            await node.infer("slow", slow_input())
        assert refused.value.retry_after_s >= 1
        assert (await running).outputs["y"].shape == (SLOW_BATCH, 512)
        assert (await queued).outputs["y"].shape == (SLOW_BATCH, 512)


async def test_deadline_while_queued(tmp_path: Path, model_repo: Path):
    config = config_for(tmp_path, model_repo, max_inflight=1, max_queue=4)
    async with Node(config, serve_api=False) as node:
        running = asyncio.create_task(node.infer("slow", slow_input()))
        await wait_until(lambda: node.service.inflight == 1)
        with pytest.raises(DeadlineExceeded):
            await node.infer("slow", slow_input(), deadline=0.001)
        await running


async def test_stop_finishes_in_flight_work_then_refuses(tmp_path: Path, model_repo: Path):
    node = Node(config_for(tmp_path, model_repo, max_inflight=1), serve_api=False)
    await node.start()
    running = asyncio.create_task(node.infer("slow", slow_input()))
    queued = asyncio.create_task(node.infer("slow", slow_input()))
    await wait_until(lambda: node.service.inflight == 1 and node.service.queue_depth == 1)
    await node.stop()
    assert (await running).outputs["y"].shape == (SLOW_BATCH, 512)
    assert (await queued).outputs["y"].shape == (SLOW_BATCH, 512)
    with pytest.raises(NotReady):
        await node.infer("tiny", np.zeros((1, 3), np.float32))
