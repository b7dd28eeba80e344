"""Local model execution for a node: loaded models, admission control, and the worker pool.

Contract:
- ``infer`` admits at most ``max_inflight`` executing plus ``max_queue`` waiting requests; beyond
  that it raises ``Overloaded`` at once (the API's 429). Waiting is FIFO (``Slots``); a request
  that finds a free slot takes it without suspending.
- Deadlines are finite and at most ``MAX_DEADLINE_S`` ahead (``BadRequest`` otherwise). A
  request whose deadline passes while waiting or running raises ``DeadlineExceeded``; a run
  already in a worker thread cannot be interrupted, so its slot is freed when the thread finishes.
- A request cancelled (its HTTP client left) leaves the queue at once. A pool run that has not
  started when its request is cancelled or times out is withdrawn and never runs.
- Runs expected (the warm-up run's time × the request's input elements over the warm-up's) to
  take less than ``inline_threshold_ms`` run on the event loop itself — the thread hop costs
  more than they do; slower ones run in a thread pool of ``workers``.
- Requests for a ``batchable`` model that arrive together (in one turn of the event loop) run as
  one batch of up to ``max_batch`` rows (``moltmesh.batching``); a batch takes one slot and runs
  inline or in the pool by its expected time like any request. Requests in an open batch count
  as waiting. A lone client's requests skip batching (the batcher goes idle).
- ``close`` stops admitting, waits for admitted work, then closes the sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import NamedTuple, NoReturn

import numpy as np

from moltmesh.batching import Batcher
from moltmesh.config import RuntimeConfig
from moltmesh.errors import BadRequest, DeadlineExceeded, NotReady, Overloaded
from moltmesh.logs import log_event
from moltmesh.metrics import NodeMetrics, observer
from runtimes.base import ModelMetadata, Runtime
from runtimes.errors import ModelNotFound, VersionNotFound
from runtimes.onnx import OnnxOptions
from runtimes.repository import ModelEntry, ModelRepository
from runtimes.variants import choose_variant

log = logging.getLogger("moltmesh.inference")

MAX_DEADLINE_S = 86_400.0
"""The furthest a request's deadline may lie ahead (one day); a later or non-finite deadline is a
``BadRequest``, so batching and timers only ever see finite deadlines."""


class InferResult(NamedTuple):
    """The answer to one inference: outputs by name and who produced them how.

    Immutable (a named tuple: cheaper to build per request than a frozen dataclass).
    """

    model: str
    version: str
    variant: str
    node: str
    route: str
    outputs: dict[str, np.ndarray]


@dataclass
class LoadedModel:
    entry: ModelEntry
    runtimes: dict[str, Runtime]  # every version of the entry; not changed after construction

    @property
    def latest(self) -> str:
        return self.entry.latest


class Slots:
    """Execution slots: at most ``size`` held at once, waiters served first come, first served.

    ``try_take`` takes a free slot without suspending when nobody waits (the common case:
    no coroutine, no future); ``wait`` queues until ``release`` hands a slot over. Loop-confined:
    call every method on the event loop's thread.
    """

    def __init__(self, size: int) -> None:
        self._free = size
        self._waiters: deque[asyncio.Future[None]] = deque()

    def try_take(self) -> bool:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return True
        return False

    async def wait(self, timeout: float | None) -> None:
        """Wait up to ``timeout`` seconds (None: no limit) for a slot (``TimeoutError`` then;
        none is held)."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter, timeout)
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed a slot just as we gave up: pass it on
            else:
                waiter.cancel()
                with contextlib.suppress(ValueError):  # release() popped it already
                    self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        """Give a slot back: to the first live waiter, else to the free pool."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1


class InferenceService:
    """Owns the node's loaded models and runs requests on them."""

    def __init__(
        self,
        repository: ModelRepository,
        config: RuntimeConfig,
        metrics: NodeMetrics,
        node_id: str,
        tier: str,
        on_battery: bool,
    ) -> None:
        self._repository = repository
        self._config = config
        self._metrics = metrics
        self._node_id = node_id
        self._tier = tier
        self._on_battery = on_battery
        self._models: dict[str, LoadedModel] = {}
        self._runtimes: dict[tuple[str, str | None], Runtime] = {}  # (model, version or None)
        self._slots = Slots(config.max_inflight)
        self._capacity = config.max_inflight + config.max_queue
        self._default_deadline_s = config.default_deadline_ms / 1000
        self._inline_threshold_s = config.inline_threshold_ms / 1000
        self._waiting = 0  # waiting for a slot
        self._batched = 0  # in a batch that has not finished
        self._running = 0  # runs (a batch is one) executing
        self._admitted = 0
        self._drained: asyncio.Future[None] | None = None  # close() waits on it (set at 0)
        self._accepting = False
        self._pool = ThreadPoolExecutor(config.workers, thread_name_prefix="moltmesh-infer")
        # The gauges read the counters when scraped, instead of being set twice per request.
        metrics.queue_depth.set_function(lambda: self._waiting + self._batched)
        metrics.inflight.set_function(lambda: self._running)
        self._run_seconds: dict[Runtime, Callable[[float], None]] = {}  # by runtime
        self._rejected_deadline = metrics.rejected.labels("deadline")
        self._rejected_queue_full = metrics.rejected.labels("queue_full")
        self._batchers: dict[Runtime, Batcher] = {}

    @property
    def ready(self) -> bool:
        return self._accepting

    async def start(self) -> None:
        """Load every version of every model in the repository (in the pool: loading blocks)."""
        loop = asyncio.get_running_loop()
        options = OnnxOptions(
            intra_op_threads=self._config.intra_op_threads,
            inter_op_threads=self._config.inter_op_threads,
            warmup_runs=self._config.warmup_runs,
        )
        for entry in self._repository.index():
            runtimes: dict[str, Runtime] = {}
            for version in entry.versions:
                variant = self._variant_for(entry, version)
                started = time.perf_counter()
                runtime = await loop.run_in_executor(
                    self._pool, self._repository.load, entry.name, version, variant, options
                )
                runtimes[version] = runtime
                if runtime.batchable and self._config.max_batch > 1:
                    sizes = observer(self._metrics.batch_requests.labels(entry.name))
                    self._batchers[runtime] = Batcher(
                        _ModelExecutor(self, runtime),
                        self._config.max_batch,
                        sizes,
                        model=entry.name,
                    )
                log_event(
                    log, "model.loaded", model=entry.name, version=version, variant=variant,
                    load_ms=round((time.perf_counter() - started) * 1000, 1),
                    run_ms=round(runtime.typical_run_seconds * 1000, 3),
                )  # fmt: skip
            self._models[entry.name] = LoadedModel(entry, runtimes)
            self._runtimes.update({(entry.name, v): r for v, r in runtimes.items()})
            self._runtimes[entry.name, None] = runtimes[entry.latest]
        self._accepting = True

    def _variant_for(self, entry: ModelEntry, version: str) -> str:
        wanted = self._config.variant
        available = entry.variants.get(version, ("full",))
        if wanted != "auto":
            return wanted
        return choose_variant(available, tier=self._tier, on_battery=self._on_battery, load=0.0)

    def admit(self, model: str, version: str | None = None) -> Runtime:
        """The runtime a request for ``model`` runs on, if one would be admitted now; raises
        NotReady, the runtimes' not-found errors, or Overloaded (queue full). ``infer`` checks
        again; the API asks first, before it reads a request's body."""
        if not self._accepting:
            raise NotReady("node is not accepting requests")
        runtime = self._runtimes.get((model, version))  # one lookup, None when not served
        if runtime is None:
            runtime = self.runtime(model, version)  # the not-found errors
        if self._waiting + self._batched + self._running >= self._capacity:
            self._overloaded(runtime)
        return runtime

    def _overloaded(self, runtime: Runtime) -> NoReturn:
        self._rejected_queue_full.inc()
        raise Overloaded(
            f"request queue is full ({self._config.max_queue} waiting)",
            retry_after_s=self._retry_after(runtime),
        )

    def serves(self, name: str) -> bool:
        """Whether ``name`` is a loaded model (cheap: one dict lookup)."""
        return name in self._models

    def model_names(self) -> list[str]:
        return sorted(self._models)

    def entry(self, name: str) -> ModelEntry:
        return self._loaded(name).entry

    def runtime(self, name: str, version: str | None = None) -> Runtime:
        """The loaded runtime of ``name`` at ``version`` (latest when None)."""
        model = self._loaded(name)
        version = version or model.latest
        try:
            return model.runtimes[version]
        except KeyError:
            raise VersionNotFound(name, version) from None

    def metadata(self, name: str, version: str | None = None) -> ModelMetadata:
        return self.runtime(name, version).metadata

    def _loaded(self, name: str) -> LoadedModel:
        try:
            return self._models[name]
        except KeyError:
            raise ModelNotFound(name) from None

    @property
    def queue_depth(self) -> int:
        """Requests admitted and waiting for an execution slot or for their batch to finish."""
        return self._waiting + self._batched

    @property
    def inflight(self) -> int:
        """Runs executing now (inline or in a worker thread; a batch is one run)."""
        return self._running

    async def infer(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray],
        *,
        version: str | None = None,
        outputs: Sequence[str] | None = None,
        deadline: float | None = None,
    ) -> InferResult:
        """Run ``model`` locally. ``deadline`` is an absolute ``time.monotonic()``; None = default.

        Raises BadRequest (a deadline not finite or more than ``MAX_DEADLINE_S`` ahead),
        NotReady, Overloaded, DeadlineExceeded, or a runtimes error (unknown model or version,
        invalid input).
        """
        return await self.infer_admitted(
            self.admit(model, version), inputs, outputs=outputs, deadline=deadline
        )

    async def infer_admitted(
        self,
        runtime: Runtime,
        inputs: Mapping[str, np.ndarray],
        *,
        outputs: Sequence[str] | None = None,
        deadline: float | None = None,
    ) -> InferResult:
        """``infer`` on a runtime ``admit`` returned a moment ago (the API admits a request
        before it reads the body, then runs it here: the model is not looked up twice).

        Admission is checked again (readiness and queue room may have changed while the body
        arrived); the same errors as ``infer``.
        """
        if not self._accepting:
            raise NotReady("node is not accepting requests")
        if self._waiting + self._batched + self._running >= self._capacity:
            self._overloaded(runtime)
        now = time.monotonic()
        if deadline is None:
            deadline = now + self._default_deadline_s
        elif not -math.inf < deadline - now <= MAX_DEADLINE_S:  # NaN fails too
            raise BadRequest(
                f"deadline must be a finite time at most {MAX_DEADLINE_S:.0f} s away, "
                f"got {deadline - now} s"
            )
        elif deadline <= now:
            self._rejected_deadline.inc()
            raise DeadlineExceeded("deadline passed before the request could run")
        self._admitted += 1
        try:
            batcher = self._batchers.get(runtime)
            joined = batcher.join(inputs, outputs, deadline) if batcher is not None else None
            if joined is not None:
                self._batched += 1  # (inline: a coroutine per request costs more than this)
                try:
                    result = await joined  # the batcher enforces the deadline
                except DeadlineExceeded:
                    self._rejected_deadline.inc()
                    raise
                finally:
                    self._batched -= 1
            elif self._inline(runtime, inputs) and self._slots.try_take():
                result = self._run_inline(runtime, inputs, outputs)  # no coroutine, no await
            else:
                result = await self._execute(runtime, inputs, outputs, deadline)
        finally:
            self._admitted -= 1
            if self._admitted == 0 and self._drained is not None:
                self._set_drained()
        meta = runtime.metadata
        return InferResult(meta.name, meta.version, meta.variant, self._node_id, "local", result)

    async def _execute(
        self,
        runtime: Runtime,
        inputs: Mapping[str, np.ndarray],
        outputs: Sequence[str] | None,
        deadline: float,
    ) -> dict[str, np.ndarray]:
        """Take a slot (waiting until ``deadline``), then run inline or in the pool."""
        if not self._slots.try_take():
            await self._wait_for_slot(deadline)
        return await self._run_holding_slot(runtime, inputs, outputs, deadline)

    async def _run_holding_slot(
        self,
        runtime: Runtime,
        inputs: Mapping[str, np.ndarray],
        outputs: Sequence[str] | None,
        deadline: float,
    ) -> dict[str, np.ndarray]:
        """Run inline or in the pool by expected time; each branch frees the slot at the end."""
        if self._inline(runtime, inputs):
            return self._run_inline(runtime, inputs, outputs)
        return await self._run_in_pool(runtime, inputs, outputs, deadline)

    def _inline(self, runtime: Runtime, inputs: Mapping[str, np.ndarray]) -> bool:
        """Whether a run is expected to be quick enough for the event loop's thread."""
        return _expected_run_seconds(runtime, inputs) < self._inline_threshold_s

    async def _wait_for_slot(self, deadline: float) -> None:
        self._waiting += 1
        try:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DeadlineExceeded("deadline passed before the request could run")
            await self._slots.wait(remaining)
        except TimeoutError:
            self._rejected_deadline.inc()
            raise DeadlineExceeded("deadline passed while the request was queued") from None
        finally:
            self._waiting -= 1

    def _run_seconds_child(self, runtime: Runtime) -> Callable[[float], None]:
        """``observe`` of the runtime's ``moltmesh_inference_seconds`` child (cached)."""
        observe = self._run_seconds.get(runtime)
        if observe is None:
            meta = runtime.metadata
            observe = observer(self._metrics.inference_seconds.labels(meta.name, meta.variant))
            self._run_seconds[runtime] = observe
        return observe

    def _run_inline(
        self, runtime: Runtime, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None
    ) -> dict[str, np.ndarray]:
        """Run on the event loop's thread, with a slot held; releases it. No await: a fast
        model's whole request runs without giving the loop up."""
        run_seconds = self._run_seconds_child(runtime)
        self._running += 1
        started = time.perf_counter()
        try:
            return runtime.run(inputs, outputs)
        finally:
            self._running -= 1
            run_seconds(time.perf_counter() - started)
            self._slots.release()

    async def _run_in_pool(
        self,
        runtime: Runtime,
        inputs: Mapping[str, np.ndarray],
        outputs: Sequence[str] | None,
        deadline: float,
    ) -> dict[str, np.ndarray]:
        """Run in a worker thread, with a slot held; the slot is released when the run really
        ends. A request cancelled (its client gone) or past its deadline while its run still
        waits for a thread withdraws the run, which then never starts; a run already started
        cannot be interrupted and keeps its slot until it finishes."""
        run_seconds = self._run_seconds_child(runtime)
        self._running += 1
        started = time.perf_counter()
        try:
            work = self._pool.submit(runtime.run, inputs, outputs)
        except BaseException:
            self._ran(None, run_seconds, started)
            raise
        # Settled on the loop's thread when the run ends or is withdrawn (loop-confined state).
        future = asyncio.wrap_future(work)
        future.add_done_callback(lambda f: self._ran(f, run_seconds, started))
        try:
            return await asyncio.wait_for(asyncio.shield(future), deadline - time.monotonic())
        except TimeoutError:
            work.cancel()  # only succeeds while the run has not started
            self._rejected_deadline.inc()
            raise DeadlineExceeded("deadline passed while the model was running") from None
        except asyncio.CancelledError:
            work.cancel()
            raise

    def _ran(
        self,
        future: asyncio.Future[object] | None,
        seconds: Callable[[float], None],
        started: float,
    ) -> None:
        """A pool run has ended (None: it could not be submitted): free its slot; time it unless
        it was withdrawn before it started."""
        self._running -= 1
        if future is not None and not future.cancelled():
            seconds(time.perf_counter() - started)
        self._slots.release()

    def _retry_after(self, runtime: Runtime) -> int:
        backlog = (self._waiting + self._batched + self._running) / self._config.max_inflight
        return max(1, math.ceil(backlog * runtime.typical_run_seconds))

    def _set_drained(self) -> None:
        """The last admitted request has left while ``close`` waits for it."""
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def stop_accepting(self) -> None:
        """Refuse new requests from now on (NotReady); admitted ones go on."""
        self._accepting = False

    async def close(self, grace_s: float) -> None:
        """Stop admitting, wait up to ``grace_s`` for admitted requests, close the sessions."""
        self.stop_accepting()
        try:
            if self._admitted:  # (no Event set and cleared by every request: a future, now)
                if self._drained is None or self._drained.done():
                    self._drained = asyncio.get_running_loop().create_future()
                # shielded: one closer's timeout or cancellation must not cancel the others' wait
                await asyncio.wait_for(asyncio.shield(self._drained), grace_s)
        except TimeoutError:
            log_event(log, "inference.drain_timeout", logging.WARNING, admitted=self._admitted)
        self._pool.shutdown(wait=True, cancel_futures=True)
        for model in self._models.values():
            for runtime in model.runtimes.values():
                runtime.close()


class _ModelExecutor:
    """The service's slots and threads as a ``moltmesh.batching.Executor`` for one model."""

    def __init__(self, service: InferenceService, runtime: Runtime) -> None:
        self._service = service
        self._runtime = runtime

    async def acquire(self) -> None:
        slots = self._service._slots
        if not slots.try_take():
            await slots.wait(None)

    def release(self) -> None:
        self._service._slots.release()

    async def run(
        self, inputs: dict[str, np.ndarray], outputs: Sequence[str] | None, deadline: float
    ) -> dict[str, np.ndarray]:
        return await self._service._run_holding_slot(self._runtime, inputs, outputs, deadline)


def _expected_run_seconds(runtime: Runtime, inputs: Mapping[str, np.ndarray]) -> float:
    """The warm-up run's time scaled by this request's input elements over the warm-up's (its
    batch size, and its height and width where those are dynamic); never below the warm-up's."""
    elements = 0
    for array in inputs.values():
        elements += array.size
    return runtime.typical_run_seconds * max(1.0, elements / runtime.warmup_elements)
