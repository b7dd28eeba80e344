"""Work nobody waits for any more is not done: a pool run whose request was cancelled (its
client left) or whose deadline passed before a worker thread took it never runs, and its slot
and queue place are free again."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import numpy as np
import pytest

from moltmesh import Node
from moltmesh.errors import DeadlineExceeded
from tests.models import tiny_reference
from tests.moltmesh.test_node import config_for, wait_until

X = np.array([[1, 2, 3]], dtype=np.float32)


def runs_of_tiny(node: Node) -> float:
    sample = node.metrics.registry.get_sample_value(
        "moltmesh_inference_seconds_count", {"model": "tiny", "variant": "full"}
    )
    return sample or 0.0


@pytest.mark.parametrize("max_batch", [1, 8], ids=["unbatched", "batched"])
async def test_pool_runs_nobody_waits_for_never_start(
    tmp_path: Path, model_repo: Path, max_batch: int
):
    config = config_for(
        tmp_path, model_repo, workers=1, max_inflight=4, max_batch=max_batch,
        inline_threshold_ms=0.0,  # every run goes to the pool
    )  # fmt: skip
    async with Node(config, serve_api=False) as node:
        service = node.service
        assert runs_of_tiny(node) == 0
        # The only worker thread is busy (as with a long run): new runs wait in the pool.
        busy = threading.Event()
        blocker = service._pool.submit(busy.wait)
        try:
            gone = [asyncio.create_task(node.infer("tiny", X)) for _ in range(2)]
            runs = 2 if max_batch == 1 else 1  # the two requests run as one batch
            await wait_until(lambda: service.inflight == runs)
            for task in gone:
                task.cancel()
            for task in gone:
                with pytest.raises(asyncio.CancelledError):
                    await task
            # Withdrawn while the worker is still busy: slots and places free at once.
            await wait_until(lambda: service.inflight == 0 and service.queue_depth == 0)
            with pytest.raises(DeadlineExceeded):
                await node.infer("tiny", X, deadline=0.05)
            await wait_until(lambda: service.inflight == 0 and service.queue_depth == 0)
        finally:
            busy.set()
        await asyncio.wait_for(asyncio.wrap_future(blocker), 5)
        assert runs_of_tiny(node) == 0  # none of the three ran
        result = await node.infer("tiny", X)
        assert runs_of_tiny(node) == 1
    np.testing.assert_allclose(result.outputs["probs"], tiny_reference(X)["probs"], rtol=1e-5)
