"""Dynamic batching: requests that arrive together run as one stacked run, each gets its rows."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from moltmesh import Node
from moltmesh.batching import IDLE_AFTER, PROBE_EVERY, Batcher
from moltmesh.errors import DeadlineExceeded
from moltmesh.inference import Slots
from runtimes.errors import InvalidInput, RunFailed
from runtimes.onnx import OnnxRuntime
from tests.models import tiny_classifier, tiny_reference
from tests.moltmesh.test_node import config_for

FAR = float("inf")


class Recorder:
    """An executor with one slot whose "model" doubles ``x`` (output ``y``); records each run's
    rows. ``reject``: a value of x the model refuses; ``fail``: what every run raises."""

    def __init__(self, reject: float | None = None, fail: Exception | None = None) -> None:
        self.calls: list[int] = []
        self.reject = reject
        self.fail = fail
        self.slots = Slots(1)

    async def acquire(self) -> None:
        if not self.slots.try_take():
            await self.slots.wait(None)

    def release(self) -> None:
        self.slots.release()

    async def run(self, inputs: dict, outputs: Sequence[str] | None, deadline: float) -> dict:
        self.release()
        x = inputs["x"]
        self.calls.append(x.shape[0])
        if self.fail is not None:
            raise self.fail
        if self.reject is not None and (x == self.reject).any():
            raise InvalidInput("x holds the refused value")
        return {"y": x * 2}


def batched_requests(node: Node) -> float:
    """Requests of model ``tiny`` that ran inside a batch, from the node's metrics."""
    value = node.metrics.registry.get_sample_value("moltmesh_batch_requests_sum", {"model": "tiny"})
    return value or 0.0


def rows(*values: float) -> dict[str, np.ndarray]:
    return {"x": np.array([[v] for v in values], dtype=np.float32)}


async def test_requests_of_one_turn_run_as_one_batch_and_get_their_own_rows():
    run = Recorder()
    batcher = Batcher(run, max_batch=32)
    futures = [batcher.join(rows(i, i + 0.5), None, FAR) for i in range(5)]
    assert all(f is not None for f in futures)
    results = await asyncio.gather(*futures)  # type: ignore[arg-type]
    assert run.calls == [10]
    for i, result in enumerate(results):
        np.testing.assert_array_equal(result["y"], [[2 * i], [2 * i + 1]])


async def test_a_batch_grows_while_requests_keep_arriving_then_closes_when_quiet():
    run = Recorder()
    batcher = Batcher(run, max_batch=32)
    futures = [batcher.join(rows(0), None, FAR)]
    for v in range(1, 6):  # one more request every turn, as a burst read over several turns
        await asyncio.sleep(0)
        futures.append(batcher.join(rows(v), None, FAR))
    for _ in range(5):  # quiet for a full growth step (two turns): the batch closes and runs
        await asyncio.sleep(0)
    late = batcher.join(rows(9), None, FAR)
    results = await asyncio.gather(*futures, late)  # type: ignore[arg-type]
    assert run.calls == [6, 1]
    assert [r["y"][0, 0] for r in results] == [0, 2, 4, 6, 8, 10, 18]


async def test_different_shapes_and_outputs_do_not_mix_and_max_batch_splits():
    run = Recorder()
    batcher = Batcher(run, max_batch=2)
    a = [batcher.join(rows(1), None, FAR) for _ in range(3)]  # 2 + 1
    b = batcher.join({"x": np.ones((1, 2), np.float32)}, None, FAR)  # other trailing shape
    c = batcher.join(rows(1), ["y"], FAR)  # other requested outputs
    too_big = batcher.join(rows(1, 2, 3), None, FAR)
    assert too_big is None  # more rows than a batch holds: runs on its own
    await asyncio.gather(*a, b, c)  # type: ignore[arg-type]
    assert sorted(run.calls) == [1, 1, 1, 2]


async def test_a_batch_waiting_for_a_slot_takes_newcomers():
    run = Recorder()
    await run.acquire()  # the model is busy
    batcher = Batcher(run, max_batch=4)
    first = batcher.join(rows(1), None, FAR)
    await asyncio.sleep(0)  # the batch has asked for the slot and waits
    later = [batcher.join(rows(v), None, FAR) for v in (2, 3, 4)]  # fills it up
    overflow = batcher.join(rows(5), None, FAR)  # a full batch takes nobody more
    run.release()
    await asyncio.gather(first, *later, overflow)  # type: ignore[arg-type]
    assert run.calls == [4, 1]
    assert run.slots.try_take()  # every slot was given back


async def test_a_deadline_that_passes_while_the_batch_waits_fails_that_member_at_once():
    run = Recorder()
    await run.acquire()  # the model is busy and stays so until the short deadline has passed
    batcher = Batcher(run, max_batch=4)
    patient = batcher.join(rows(1), None, FAR)
    hurried = batcher.join(rows(2), None, time.monotonic() + 0.05)
    with pytest.raises(DeadlineExceeded):
        await hurried  # woken by the batch's timer, not by the batch
    assert run.calls == [] and not patient.done()  # type: ignore[union-attr]
    run.release()
    result = await patient  # type: ignore[misc]
    assert run.calls == [1] and result["y"][0, 0] == 2.0


async def test_a_member_the_model_rejects_fails_alone():
    run = Recorder(reject=7.0)
    batcher = Batcher(run, max_batch=8)
    good, bad, other = (batcher.join(rows(v), None, FAR) for v in (1.0, 7.0, 3.0))
    results = await asyncio.gather(good, bad, other, return_exceptions=True)  # type: ignore[arg-type]
    assert isinstance(results[1], InvalidInput)
    np.testing.assert_array_equal(results[0]["y"], [[2.0]])
    np.testing.assert_array_equal(results[2]["y"], [[6.0]])
    assert run.calls == [3, 1, 1, 1]  # the batch, then each on its own


async def test_other_failures_reach_every_member():
    batcher = Batcher(Recorder(fail=RunFailed("m", "out of memory")), max_batch=8)
    futures = [batcher.join(rows(1), None, FAR) for _ in range(3)]
    results = await asyncio.gather(*futures, return_exceptions=True)  # type: ignore[arg-type]
    assert all(isinstance(r, RunFailed) for r in results)


async def test_cancelled_and_expired_members_are_left_out():
    run = Recorder()
    batcher = Batcher(run, max_batch=8)
    cancelled = batcher.join(rows(1), None, FAR)
    expired = batcher.join(rows(2), None, 0.0)  # its deadline has passed when the batch starts
    kept = [batcher.join(rows(3), None, FAR), batcher.join(rows(4), None, FAR)]
    assert cancelled is not None and expired is not None
    cancelled.cancel()
    with pytest.raises(DeadlineExceeded):
        await expired
    results = await asyncio.gather(*kept)  # type: ignore[arg-type]
    assert run.calls == [2]
    assert [r["y"][0, 0] for r in results] == [6.0, 8.0]


async def test_a_lone_client_stops_batching_and_probes_find_company_again():
    run = Recorder()
    batcher = Batcher(run, max_batch=8)
    for _ in range(IDLE_AFTER):  # one request at a time: single-request batches
        joined = batcher.join(rows(1), None, FAR)
        assert joined is not None
        await joined
    assert not batcher.active
    alone = [batcher.join(rows(1), None, FAR) for _ in range(PROBE_EVERY - 1)]
    assert alone == [None] * (PROBE_EVERY - 1)  # the caller runs these on its own
    probe = batcher.join(rows(1), None, FAR)
    company = batcher.join(rows(2), None, FAR)  # arrives in the same turn: joins the probe
    assert probe is not None and company is not None
    await asyncio.gather(probe, company)
    assert batcher.active and run.calls[-1] == 2


async def test_runtime_says_whether_a_model_can_be_batched(tmp_path: Path):
    shared = OnnxRuntime(tiny_classifier(tmp_path / "a.onnx"))
    other_axis = OnnxRuntime(tiny_classifier(tmp_path / "b.onnx", output_batch_dim="M"))
    assert shared.batchable and not other_axis.batchable


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_concurrent_requests_through_a_node_get_their_own_answers(
    tmp_path: Path, model_repo: Path, seed: int
):
    rng = random.Random(seed)
    inputs = [
        np.asarray(
            [[rng.uniform(-3, 3) for _ in range(3)] for _ in range(rng.randint(1, 3))],
            dtype=np.float32,
        )
        for _ in range(40)
    ]
    async with Node(config_for(tmp_path, model_repo, max_batch=8), serve_api=False) as node:
        results = await asyncio.gather(*(node.infer("tiny", {"x": x}) for x in inputs))
        batched = batched_requests(node)
    for x, result in zip(inputs, results, strict=True):
        expected = tiny_reference(x)
        np.testing.assert_allclose(
            result.outputs["probs"], expected["probs"], rtol=1e-5, err_msg=f"seed {seed}"
        )
        assert result.outputs["logits"].shape == (x.shape[0], 4)
    assert batched >= 2, f"seed {seed}: nothing was batched"


async def test_batching_off_runs_each_request_alone(tmp_path: Path, model_repo: Path):
    async with Node(config_for(tmp_path, model_repo, max_batch=1), serve_api=False) as node:
        x = np.ones((1, 3), np.float32)
        await asyncio.gather(*(node.infer("tiny", {"x": x}) for _ in range(8)))
        assert batched_requests(node) == 0
