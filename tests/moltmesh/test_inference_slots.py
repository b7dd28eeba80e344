"""``Slots``: the execution slots of the inference service (FIFO, deadlines, hand-over)."""

from __future__ import annotations

import asyncio

import pytest

from moltmesh.inference import Slots


async def test_free_slots_are_taken_without_waiting_then_refused():
    slots = Slots(2)
    assert slots.try_take() and slots.try_take()
    assert not slots.try_take()
    slots.release()
    assert slots.try_take()


async def test_waiters_are_served_first_come_first_served():
    slots = Slots(1)
    assert slots.try_take()
    order: list[int] = []

    async def waiter(i: int) -> None:
        await slots.wait(10)
        order.append(i)

    tasks = [asyncio.create_task(waiter(i)) for i in range(3)]
    await asyncio.sleep(0)  # all three queued
    assert not slots.try_take()  # a newcomer does not jump the queue
    for expected in range(3):
        slots.release()
        await tasks[expected]
        assert order == list(range(expected + 1))
    slots.release()
    assert slots.try_take()


async def test_a_timed_out_waiter_holds_no_slot():
    slots = Slots(1)
    assert slots.try_take()
    with pytest.raises(TimeoutError):
        await slots.wait(0.01)
    slots.release()
    assert slots.try_take()  # the slot went back to the pool, not to the departed waiter
    assert not slots.try_take()


async def test_a_cancelled_waiter_holds_no_slot():
    slots = Slots(1)
    assert slots.try_take()
    task = asyncio.create_task(slots.wait(10))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    slots.release()
    assert slots.try_take() and not slots.try_take()


async def test_a_slot_handed_over_as_the_waiter_is_cancelled_is_passed_on():
    slots = Slots(1)
    assert slots.try_take()
    first = asyncio.create_task(slots.wait(10))
    second = asyncio.create_task(slots.wait(10))
    await asyncio.sleep(0)
    slots.release()  # hands the slot to `first`, which is cancelled before it resumes
    first.cancel()
    try:
        await first
    except asyncio.CancelledError:
        pass  # `first` gave up the slot it was handed: it went on to `second`
    else:
        slots.release()  # Python 3.11's wait_for keeps a result that beat the cancellation
    await asyncio.wait_for(second, 5)
    assert not slots.try_take()  # exactly one slot, held by `second`
    slots.release()
    assert slots.try_take()
