"""The serving benchmark's model floor really serves the model (bench/serve_floor.py)."""

from __future__ import annotations

import asyncio

import aiohttp
import numpy as np
import onnxruntime as ort

from bench.serve_floor import ModelFloor
from bench.serve_load import infer_bodies
from moltmesh.client import decode_answer
from moltmesh.node import BUNDLED_MODELS


async def test_concurrent_requests_get_their_own_rows_of_one_batched_run():
    session = ort.InferenceSession(
        str(BUNDLED_MODELS / "defects" / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    runs = []
    real_run = session.run

    def counted_run(names, feed):
        runs.append(len(next(iter(feed.values()))))
        return real_run(names, feed)

    session.run = counted_run  # type: ignore[method-assign]
    floor = ModelFloor(session, max_batch=4)
    url = await floor.start()
    images = np.random.default_rng(3).random((6, 1, 1, 32, 32), dtype=np.float32)
    try:
        async with aiohttp.ClientSession() as client:

            async def ask(image: np.ndarray) -> np.ndarray:
                req = infer_bodies(image, "unused", url)["binary"]
                async with client.post(url, headers=req.headers, data=req.body) as r:
                    assert r.status == 200
                    answer = decode_answer(
                        await r.read(), r.headers.get("Inference-Header-Content-Length")
                    )
                    return answer.outputs["probabilities"]

            got = await asyncio.gather(*(ask(image) for image in images))
    finally:
        await floor.stop()
    for image, probabilities in zip(images, got, strict=True):
        np.testing.assert_allclose(probabilities, real_run(None, {"image": image})[0], atol=1e-6)
    assert sum(runs) == len(images) and max(runs) <= 4
    assert len(runs) < len(images), f"no two requests shared a run: {runs}"
