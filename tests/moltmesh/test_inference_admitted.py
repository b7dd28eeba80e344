"""``InferenceService.infer_admitted``: the API admits a request before reading its body and runs
it on the admitted runtime; admission is checked again, since the node may have stopped or filled
up while the body arrived."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from moltmesh import Node
from moltmesh.errors import NotReady, Overloaded
from runtimes.errors import ModelNotFound, VersionNotFound
from tests.models import tiny_reference
from tests.moltmesh.test_node import config_for

X = np.array([[1, 2, 3], [0, -1, 0.5]], dtype=np.float32)


async def test_admitted_runtime_runs_and_answers_as_infer(tmp_path: Path, model_repo: Path):
    async with Node(config_for(tmp_path, model_repo), serve_api=False) as node:
        service = node.service
        runtime = service.admit("tiny")
        assert runtime is service.admit("tiny", runtime.metadata.version) is service.runtime("tiny")
        got = await service.infer_admitted(runtime, {"x": X})
        want = await service.infer("tiny", {"x": X})
        assert (got.model, got.version, got.variant, got.route) == (
            want.model, want.version, want.variant, want.route,
        )  # fmt: skip
        np.testing.assert_allclose(got.outputs["probs"], tiny_reference(X)["probs"], rtol=1e-5)
        with pytest.raises(ModelNotFound):
            service.admit("nope")
        with pytest.raises(VersionNotFound):
            service.admit("tiny", "999")


async def test_admission_is_checked_again_when_the_request_runs(tmp_path: Path, model_repo: Path):
    config = config_for(tmp_path, model_repo)
    config.runtime.max_inflight, config.runtime.max_queue = 1, 0
    async with Node(config, serve_api=False) as node:
        service = node.service
        runtime = service.admit("tiny")
        service._running += 1  # the one slot taken meanwhile by another request
        try:
            with pytest.raises(Overloaded):
                await service.infer_admitted(runtime, {"x": X})
        finally:
            service._running -= 1
        runtime = service.admit("tiny")
        service.stop_accepting()  # the node began stopping while the body arrived
        with pytest.raises(NotReady):
            await service.infer_admitted(runtime, {"x": X})
        assert service.queue_depth == 0 and service.inflight == 0
