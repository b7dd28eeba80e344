"""The inference service across event loops and shutdown: an embedding app may call
``node.infer`` from several ``asyncio.run`` calls, several tasks may stop the node at once, and
a request refused because its deadline had already passed is counted."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest

from moltmesh import Node
from moltmesh.errors import DeadlineExceeded
from tests.moltmesh.test_node import config_for

X = np.array([[1, 2, 3]], dtype=np.float32)


def test_node_infer_works_from_later_event_loops(tmp_path: Path, model_repo: Path) -> None:
    """The batcher used to keep the loop of its first request: every later loop's request
    failed with 'Event loop is closed'."""
    node = Node(config_for(tmp_path, model_repo), serve_api=False)
    asyncio.run(node.start())
    try:
        for _ in range(3):  # each asyncio.run is a new loop; the previous one is closed
            result = asyncio.run(node.infer("tiny", {"x": X}))
            assert result.outputs["probs"].shape == (1, 4)
    finally:
        asyncio.run(node.stop())


def test_concurrent_closes_both_end_when_the_requests_do(tmp_path: Path, model_repo: Path) -> None:
    async def main() -> list[float]:
        config = config_for(tmp_path, model_repo, inline_threshold_ms=0.0, max_batch=1)
        node = Node(config, serve_api=False)
        await node.start()
        runtime = node.service.runtime("tiny")
        real = runtime.run

        def slow(inputs, outputs=None):  # type: ignore[no-untyped-def]
            time.sleep(0.3)  # in the worker pool: the request is still running at close
            return real(inputs, outputs)

        runtime.run = slow  # type: ignore[method-assign]
        request = asyncio.ensure_future(node.service.infer("tiny", {"x": X}))
        await asyncio.sleep(0.05)
        started = time.monotonic()

        async def close() -> float:
            await node.service.close(5.0)
            return time.monotonic() - started

        took = await asyncio.gather(close(), close())
        await request
        return took

    took = asyncio.run(main())
    assert max(took) < 2.5, took  # both when the request ends (~0.25 s), not after the 5 s grace


async def test_a_deadline_already_passed_is_refused_and_counted(
    tmp_path: Path, model_repo: Path
) -> None:
    async with Node(config_for(tmp_path, model_repo), serve_api=False) as node:
        with pytest.raises(DeadlineExceeded):
            await node.service.infer("tiny", {"x": X}, deadline=time.monotonic() - 1)
        sample = node.metrics.registry.get_sample_value(
            "moltmesh_rejected_total", {"reason": "deadline"}
        )
        assert sample == 1.0
