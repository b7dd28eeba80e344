"""Capability metadata a node gossips in SWIM: tier, load, battery, models and their variants,
execution providers.

``Capability`` is what this node knows about itself; ``build_meta`` packs it into the SWIM
``Meta`` record (bounded by the SWIM meta budget), and ``MetaRefresher`` re-reads load and
capability every ``mesh.meta_refresh_s`` and publishes a new ``Meta`` only when something a peer
would act on changed (tier, models, battery state, or a load moved by ``LOAD_STEP`` points), so
idle nodes do not churn gossip.

Models travel in ``Meta.models`` as ``"name=variant+variant"`` (variants held for the newest
version).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psutil

from consensus.errors import ConfigError
from consensus.swim_messages import Meta, meta_size
from moltmesh.logs import log_event

log = logging.getLogger("moltmesh.mesh.meta")

LOAD_STEP = 10  # percentage points of CPU or memory load that make a new Meta worth gossiping
FAILURE_LOG_INTERVAL_S = 60.0
"""A refresh failing with an OS error (out of file descriptors, say) is logged at most once per
this many seconds; the next warning counts those left out meanwhile."""


@dataclass(frozen=True, slots=True)
class Capability:
    tier: str = ""
    providers: tuple[str, ...] = ()
    on_battery: bool = False
    battery_percent: int | None = None  # None: no battery
    models: dict[str, tuple[str, ...]] = field(default_factory=dict)  # name -> variants held


@dataclass(frozen=True, slots=True)
class Load:
    cpu: int
    mem: int


def read_load() -> Load:
    """CPU load since the previous call and memory use, in percent (psutil)."""
    return Load(round(psutil.cpu_percent(interval=None)), round(psutil.virtual_memory().percent))


def read_battery() -> tuple[bool, int | None]:
    """(discharging, percent) of the battery, or (False, None) on mains-only devices."""
    battery = psutil.sensors_battery() if hasattr(psutil, "sensors_battery") else None
    if battery is None:
        return False, None
    return (not battery.power_plugged), round(battery.percent)


def encode_models(models: dict[str, tuple[str, ...]]) -> tuple[str, ...]:
    return tuple(
        f"{name}={'+'.join(sorted(variants))}" if variants else name
        for name, variants in sorted(models.items())
    )


def decode_models(entries: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """Inverse of ``encode_models`` (a bare name means variants unknown)."""
    out: dict[str, tuple[str, ...]] = {}
    for entry in entries:
        name, _, variants = entry.partition("=")
        out[name] = tuple(v for v in variants.split("+") if v)
    return out


def build_meta(
    address: str,
    cap: Capability,
    load: Load,
    ports: dict[str, int] | None = None,
    links: dict[str, bool] | None = None,
    budget: int | None = None,
) -> Meta:
    """The SWIM ``Meta`` for this node; models beyond ``budget`` bytes are left out (logged)."""
    extra = {
        "battery": -1 if cap.battery_percent is None else cap.battery_percent,
        "on_battery": cap.on_battery,
        "providers": tuple(sorted(cap.providers)),
    }
    models = encode_models(cap.models)
    while True:
        meta = dataclasses.replace(
            Meta.create(address, ports=ports, tier=cap.tier, cpu_load=min(load.cpu, 100),
                        mem_load=min(load.mem, 100), models=models, links=links),
            **extra,
        )  # fmt: skip
        if budget is None or not models or meta_size(meta) <= budget:
            return meta
        log_event(log, "meta.models_truncated", dropped=models[-1], level=logging.WARNING)
        models = models[:-1]


def worth_publishing(old: Meta, new: Meta) -> bool:
    """True when a peer would act on the change (not on small load jitter)."""
    if dataclasses.replace(old, cpu_load=0, mem_load=0) != dataclasses.replace(
        new, cpu_load=0, mem_load=0
    ):
        return True
    return abs(old.cpu_load - new.cpu_load) >= LOAD_STEP or abs(old.mem_load - new.mem_load) >= (
        LOAD_STEP
    )


class MetaRefresher:
    """Every ``interval_s``: ``make()`` a fresh Meta; ``publish`` it when worth it."""

    def __init__(
        self,
        make: Callable[[], Meta],
        publish: Callable[[Meta], None],
        current: Meta,
        interval_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.make = make
        self.publish = publish
        self.current = current
        self.interval_s = interval_s
        self.published = 0
        self.failures = 0  # refreshes that raised
        self._clock = clock
        self._logged_at: float | None = None  # when a failure was last logged
        self._unlogged = 0  # failures since then not logged
        self._task: asyncio.Task[None] | None = None

    def refresh(self) -> bool:
        """Re-read now; True when a new Meta was published."""
        new = self.make()
        if not worth_publishing(self.current, new):
            return False
        try:
            self.publish(new)
        except ConfigError as e:  # over the meta budget: keep the old one
            log_event(log, "meta.rejected", error=str(e), level=logging.WARNING)
            return False
        self.current = new
        self.published += 1
        return True

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            self.refresh_logged()

    def refresh_logged(self) -> None:
        """``refresh``, never raising: a probe failing (psutil, a model list) must not stop the
        refreshing. An ``OSError`` (EMFILE while the process is out of descriptors...) is an
        expected condition: one warning line with its errno (``meta.refresh_failed``), at most
        once per ``FAILURE_LOG_INTERVAL_S``, with the count of the failures not logged since.
        Anything else is a bug: logged with its traceback."""
        try:
            self.refresh()
        except OSError as e:
            self.failures += 1
            now = self._clock()
            if self._logged_at is not None and now - self._logged_at < FAILURE_LOG_INTERVAL_S:
                self._unlogged += 1
                return
            self._logged_at = now
            log_event(log, "meta.refresh_failed", errno=e.errno, error=e.strerror or str(e),
                      not_logged=self._unlogged, level=logging.WARNING)  # fmt: skip
            self._unlogged = 0
        except Exception:
            self.failures += 1
            log.exception("metadata refresh failed")
