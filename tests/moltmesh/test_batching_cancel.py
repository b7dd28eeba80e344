"""A batch whose every member is gone (clients left, deadlines passed) while it runs is
cancelled, so its executor can withdraw a run that has not started; one member leaving is not
enough."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np
import pytest

from moltmesh.batching import Batcher

FAR = float("inf")


class Gate:
    """An executor with one slot whose runs wait for ``opened`` (a model busy until then), then
    double ``x``; ``started`` is set when a run begins, ``withdrawn`` when one is cancelled."""

    def __init__(self) -> None:
        self.opened = asyncio.Event()
        self.started = asyncio.Event()
        self.withdrawn = asyncio.Event()
        self.calls: list[int] = []

    async def acquire(self) -> None:
        pass

    def release(self) -> None:
        pass

    async def run(self, inputs: dict, outputs: Sequence[str] | None, deadline: float) -> dict:
        self.started.set()
        try:
            await self.opened.wait()
        except asyncio.CancelledError:
            self.withdrawn.set()
            raise
        self.calls.append(inputs["x"].shape[0])
        return {"y": inputs["x"] * 2}


def rows(*values: float) -> dict[str, np.ndarray]:
    return {"x": np.array([[v] for v in values], dtype=np.float32)}


@pytest.mark.parametrize("members", [1, 3])
async def test_a_run_every_member_left_is_withdrawn(members: int):
    gate = Gate()
    batcher = Batcher(gate, max_batch=8)
    futures = [batcher.join(rows(v), None, FAR) for v in range(members)]
    await gate.started.wait()
    for future in futures:
        future.cancel()  # type: ignore[union-attr]
    await asyncio.wait_for(gate.withdrawn.wait(), 5)
    assert gate.calls == []
    # The batcher still works: a newcomer gets its own answer.
    gate.opened.set()
    later = batcher.join(rows(4), None, FAR)
    assert later is not None
    assert (await later)["y"][0, 0] == 8.0


async def test_a_run_some_members_still_want_goes_on():
    gate = Gate()
    batcher = Batcher(gate, max_batch=8)
    leaving, staying = (batcher.join(rows(v), None, FAR) for v in (1.0, 2.0))
    await gate.started.wait()
    leaving.cancel()  # type: ignore[union-attr]
    await asyncio.sleep(0)  # the cancellation's callbacks run
    gate.opened.set()
    result = await staying  # type: ignore[misc]
    assert not gate.withdrawn.is_set()
    assert gate.calls == [2] and result["y"][0, 0] == 4.0
