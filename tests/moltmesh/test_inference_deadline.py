"""The inference service's deadline contract for embedding apps: only finite deadlines at most a
day ahead are accepted (BadRequest otherwise), so batching and timers never see NaN or infinity."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest

from moltmesh import Node
from moltmesh.batching import Batcher
from moltmesh.errors import BadRequest
from moltmesh.inference import MAX_DEADLINE_S
from tests.models import tiny_reference
from tests.moltmesh.test_node import config_for

X = np.array([[1, 2, 3], [0, -1, 0.5]], dtype=np.float32)


async def test_embedding_api_refuses_non_finite_and_far_deadlines(tmp_path: Path, model_repo: Path):
    async with Node(config_for(tmp_path, model_repo), serve_api=False) as node:
        for budget in (math.nan, math.inf, -math.inf, MAX_DEADLINE_S * 2, 1e308):
            with pytest.raises(BadRequest, match="deadline"):
                await node.infer("tiny", X, deadline=budget)
        for absolute in (math.nan, math.inf, -math.inf, time.monotonic() + MAX_DEADLINE_S + 60):
            with pytest.raises(BadRequest, match="deadline"):
                await node.service.infer("tiny", {"x": X}, deadline=absolute)
        assert node.service.queue_depth == 0 and node.service.inflight == 0
        result = await node.infer("tiny", X, deadline=MAX_DEADLINE_S / 2)
    np.testing.assert_allclose(result.outputs["probs"], tiny_reference(X)["probs"], rtol=1e-5)


async def test_batcher_refuses_a_nan_deadline():
    class Never:
        async def acquire(self) -> None:
            raise AssertionError("no batch should open")

        def release(self) -> None:
            raise AssertionError("no batch should open")

        async def run(self, inputs, outputs, deadline):  # type: ignore[no-untyped-def]
            raise AssertionError("no batch should run")

    batcher = Batcher(Never(), 4)
    with pytest.raises(ValueError, match="deadline"):
        batcher.join({"x": X}, None, math.nan)
