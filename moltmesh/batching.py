"""Dynamic batching: requests for one model that arrive together run as one batch.

A busy node answers many small requests for the same model at once (32 cameras, one patch each).
Run one by one, each pays onnxruntime's per-call cost and evicts the HTTP stack's working set
from the CPU caches; stacked along the batch axis they run as one call. No timer waits for a
batch to fill: a batch holds the requests that arrive while it keeps growing, turn by turn of
the event loop, and while its model is busy.

Contract (``Batcher``; loop-confined, call it on the event loop's thread):

- ``join(inputs, outputs, deadline)`` returns a future for the request's outputs, or ``None``
  when the request should run on its own (its inputs disagree on the batch size, or the batcher
  is idle: see below). Requests join the open batch of the same *shape key* (input names,
  dtypes, every dimension but the first, requested outputs) while it holds fewer than
  ``max_batch`` rows.
- A batch stays open to newcomers while it grows: it opens in one turn of the loop and, every
  two turns (a request read in one turn reaches ``join`` in the next), closes if nobody joined
  meanwhile or it is full; then it asks the ``Executor`` for a slot and still takes newcomers
  until it has one (a busy model collects a bigger batch). A burst of requests that arrive over
  a few turns thus runs as one batch, at the price of two turns per growth step. Then it runs
  (``executor.run(inputs, outputs, deadline)`` with the rows stacked in joining order and the
  latest member deadline) and each future gets its own rows of every output (views, no copies).
  A member whose deadline (``time.monotonic()``) passes before its batch has answered gets
  ``DeadlineExceeded`` then (one timer per batch, at its earliest pending deadline); a batch
  that starts leaves expired members out.
- A request cancelled before its batch runs is left out; one cancelled later is ignored,
  unless every member of the run is cancelled or past its deadline: then the run is cancelled
  (``executor.run`` sees ``CancelledError`` and withdraws a run that has not started).
- Whatever ``run`` raises is every member's error, except ``InvalidInput`` (one member's
  values may be what the model rejects) and outputs without the batch's rows: then each member
  runs again on its own, so each gets its own answer or error.
- Idle detection, so a lone client never pays for a batch: after ``IDLE_AFTER`` batches in a
  row that held one request, ``join`` answers ``None`` except for every ``PROBE_EVERY``-th
  request, which opens a batch again; a probe that collects a second request turns batching on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from moltmesh.errors import DeadlineExceeded
from runtimes.errors import InvalidInput, RunFailed

Outputs = dict[str, np.ndarray]

IDLE_AFTER = 8  # single-request batches in a row before the batcher goes idle
PROBE_EVERY = 64  # while idle, every this many-th request opens a batch to look for company


class Executor(Protocol):
    """Where batches run: execution slots and the run itself (the owner's admission and threads).

    Loop-confined like the batcher.
    """

    async def acquire(self) -> None:
        """Take an execution slot, waiting as long as it takes (cancellable)."""

    def release(self) -> None:
        """Give back a slot taken with ``acquire`` and not used."""

    async def run(
        self, inputs: dict[str, np.ndarray], outputs: Sequence[str] | None, deadline: float
    ) -> Outputs:
        """Run with a slot held (from ``acquire``); the slot is freed when the run ends."""
        ...


class _Batch:
    """Requests waiting to run together: their inputs, row counts and futures, in join order."""

    __slots__ = (
        "armed", "deadlines", "futures", "inputs", "key", "loop", "outputs", "rows", "running",
        "timer", "total", "waiting_on",
    )  # fmt: skip

    def __init__(
        self, key: tuple[Any, ...], outputs: Sequence[str] | None, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.key = key
        self.loop = loop
        self.outputs = outputs
        self.inputs: list[Mapping[str, np.ndarray]] = []
        self.rows: list[int] = []
        self.deadlines: list[float] = []
        self.futures: list[asyncio.Future[Outputs]] = []
        self.total = 0
        self.timer: asyncio.TimerHandle | None = None
        self.armed = float("inf")  # the deadline the timer is set for
        self.running = False  # its run is under way (the batch's task may be cancelled)
        self.waiting_on = 0  # members of the run not yet answered, failed or cancelled


class Batcher:
    """Coalesces concurrent requests for one model into batched runs (see the module contract).

    ``executor`` runs one (possibly stacked) request and returns its outputs; the owner supplies
    admission, slots and the choice of thread. ``on_batch(size)`` is told the number of requests
    in each batch that runs (for metrics). ``model`` names the model in errors.
    """

    def __init__(
        self,
        executor: Executor,
        max_batch: int,
        on_batch: Callable[[int], None] | None = None,
        model: str = "model",
    ) -> None:
        if max_batch < 2:
            raise ValueError(f"max_batch must be at least 2, got {max_batch}")
        self._executor = executor
        self._max_batch = max_batch
        self._on_batch = on_batch
        self._model = model
        self._open: dict[tuple[Any, ...], _Batch] = {}
        self._tasks: set[asyncio.Task[None]] = set()  # the loop keeps only weak references
        self._active = True
        self._singles = 0
        self._until_probe = 0

    @property
    def active(self) -> bool:
        """True while requests are being batched (False: idle, only probes open batches)."""
        return self._active

    def join(
        self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None, deadline: float
    ) -> asyncio.Future[Outputs] | None:
        """The future of this request's outputs in a batch, or None to run it on its own.

        ``deadline`` is a ``time.monotonic()`` instant (``inf``: none); NaN raises ValueError
        (it would poison the batch's timer and the ``max`` of its deadlines).
        """
        if deadline != deadline:
            raise ValueError("a batch member's deadline must not be NaN")
        if not self._active and not self._open and self._until_probe > 0:
            self._until_probe -= 1  # idle, and no batch to join: the cheapest way out
            return None
        rows, key = _rows_and_key(inputs, outputs)
        if rows is None or rows > self._max_batch:
            return None
        batch = self._open.get(key)
        if batch is None or batch.total + rows > self._max_batch:
            if not self._active:
                if self._until_probe > 0:
                    self._until_probe -= 1
                    return None
                self._until_probe = PROBE_EVERY - 1
            loop = asyncio.get_running_loop()  # once per batch, not per request
            batch = _Batch(key, outputs, loop)
            task = loop.create_task(self._run(batch))
            self._open[key] = batch  # only once its task exists
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        future: asyncio.Future[Outputs] = batch.loop.create_future()
        batch.inputs.append(inputs)
        batch.rows.append(rows)
        batch.deadlines.append(deadline)
        batch.futures.append(future)
        batch.total += rows
        if deadline < batch.armed:
            self._arm(batch, deadline)
        return future

    def _arm(self, batch: _Batch, deadline: float) -> None:
        if batch.timer is not None:
            batch.timer.cancel()
        batch.armed = deadline
        delay = deadline - time.monotonic()
        batch.timer = batch.loop.call_later(delay, self._expire, batch)

    def _expire(self, batch: _Batch) -> None:
        """The batch's timer: fail members whose deadline has passed, re-arm for the next."""
        batch.timer, batch.armed = None, float("inf")
        now = time.monotonic()
        pending = float("inf")
        for future, deadline in zip(batch.futures, batch.deadlines, strict=True):
            if future.done():
                continue
            if deadline <= now:
                future.set_exception(DeadlineExceeded("deadline passed while its batch ran"))
            else:
                pending = min(pending, deadline)
        if pending < float("inf"):
            self._arm(batch, pending)

    async def _run(self, batch: _Batch) -> None:
        """Take a slot for ``batch`` (open to newcomers meanwhile), close it, run its members."""
        try:
            await self._run_batch(batch)
        finally:
            if batch.timer is not None:
                batch.timer.cancel()

    async def _run_batch(self, batch: _Batch) -> None:
        try:
            while batch.total < self._max_batch:
                before = batch.total
                await asyncio.sleep(0)
                await asyncio.sleep(0)
                if batch.total == before:
                    break
            await self._executor.acquire()
        except BaseException as exc:
            self._close(batch)
            for future in batch.futures:
                self._fail(future, exc)
            raise
        self._close(batch)
        self._learn(len(batch.futures))
        now = time.monotonic()
        live = []
        for i, future in enumerate(batch.futures):
            if future.done():
                continue
            if batch.deadlines[i] <= now:
                future.set_exception(DeadlineExceeded("deadline passed before the batch ran"))
            else:
                live.append(i)
        if not live:
            self._executor.release()
            return
        self._withdraw_when_abandoned(batch, live)
        if len(live) == 1:
            i = live[0]
            batch.running = True
            try:
                await self._run_alone(
                    batch.inputs[i], batch.outputs, batch.deadlines[i], batch.futures[i], held=True
                )
            finally:
                batch.running = False
            return
        if self._on_batch is not None:
            self._on_batch(len(live))
        names = list(batch.inputs[live[0]])
        stacked = {n: np.concatenate([batch.inputs[i][n] for i in live]) for n in names}
        batch.running = True
        try:
            deadline = max(batch.deadlines[i] for i in live)
            result = await self._executor.run(stacked, batch.outputs, deadline)
        except InvalidInput:
            result = None
        except BaseException as exc:
            for i in live:
                self._fail(batch.futures[i], exc)
            if not isinstance(exc, Exception):
                raise
            return
        finally:
            batch.running = False
        total = sum(batch.rows[i] for i in live)
        if result is None or any(a.ndim == 0 or a.shape[0] != total for a in result.values()):
            for i in live:  # each on its own, for its own answer or error
                await self._run_alone(
                    batch.inputs[i], batch.outputs, batch.deadlines[i], batch.futures[i]
                )
            return
        start = 0
        if len(result) == 1:  # the common case, without a comprehension per member
            ((name, array),) = result.items()
            for i in live:
                end = start + batch.rows[i]
                future = batch.futures[i]
                if not future.done():
                    future.set_result({name: array[start:end]})
                start = end
            return
        for i in live:
            end = start + batch.rows[i]
            future = batch.futures[i]
            if not future.done():
                future.set_result({name: a[start:end] for name, a in result.items()})
            start = end

    def _withdraw_when_abandoned(self, batch: _Batch, live: list[int]) -> None:
        """Once every member in ``live`` is settled (cancelled by a client that left, or past
        its deadline) while the batch's run is under way, cancel the batch's task: the
        executor then withdraws the run if it has not started (nobody wants its answer)."""
        task = asyncio.current_task()
        batch.waiting_on = len(live)

        def member_settled(_: asyncio.Future[Outputs]) -> None:
            batch.waiting_on -= 1
            if batch.waiting_on == 0 and batch.running and task is not None:
                batch.running = False
                task.cancel()

        for i in live:
            batch.futures[i].add_done_callback(member_settled)

    async def _run_alone(
        self,
        inputs: Mapping[str, np.ndarray],
        outputs: Sequence[str] | None,
        deadline: float,
        future: asyncio.Future[Outputs],
        held: bool = False,
    ) -> None:
        """Run one member on its own (``held``: its slot is taken already)."""
        try:
            if not held:
                await self._executor.acquire()
            result = await self._executor.run(dict(inputs), outputs, deadline)
        except BaseException as exc:
            self._fail(future, exc)
            if not isinstance(exc, Exception):
                raise
            return
        if not future.done():
            future.set_result(result)

    def _fail(self, future: asyncio.Future[Outputs], exc: BaseException) -> None:
        if future.done():
            return
        if isinstance(exc, Exception):
            future.set_exception(exc)
        else:  # cancellation of the batch's task: the members cannot be answered
            reason = f"its batch was interrupted ({type(exc).__name__})"
            future.set_exception(RunFailed(self._model, reason))

    def _close(self, batch: _Batch) -> None:
        if self._open.get(batch.key) is batch:
            del self._open[batch.key]

    def _learn(self, size: int) -> None:
        """Idle detection from the size of each batch that closes."""
        if size > 1:
            self._active = True
            self._singles = 0
            return
        self._singles += 1
        if self._active and self._singles >= IDLE_AFTER:
            self._active = False
            self._until_probe = PROBE_EVERY - 1


def _rows_and_key(
    inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None
) -> tuple[int | None, tuple[Any, ...] | None]:
    """The batch size the inputs agree on (None: no inputs, a scalar, a non-array or a
    disagreement) and, when there is one, the shape key: what must be equal for two requests
    to stack (input names, dtypes, trailing dims, requested outputs)."""
    wanted = tuple(outputs) if outputs else None
    if len(inputs) == 1:  # the common case: one pass, no sorting
        for name, value in inputs.items():
            if not isinstance(value, np.ndarray) or value.ndim == 0:
                return None, None
            shape = value.shape
            return shape[0] or None, (wanted, name, value.dtype, shape[1:])
    rows = None
    for value in inputs.values():
        if not isinstance(value, np.ndarray) or value.ndim == 0:
            return None, None
        if rows is None:
            rows = value.shape[0]
        elif value.shape[0] != rows:
            return None, None
    if not rows:
        return None, None
    return rows, (wanted, *((n, inputs[n].dtype, inputs[n].shape[1:]) for n in sorted(inputs)))
