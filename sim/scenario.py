"""Scenarios as data: cluster size, link behaviour, fault rates, clients and phases.

A scenario is a frozen dataclass tree that round-trips through a plain dict (and so through
TOML): ``Scenario.from_dict(tomllib.load(f))``. Durations are in milliseconds in the data (what a
person writes) and converted to microseconds by the runner. A run is a scenario plus a seed.

Phases run in order. A ``safety`` phase injects the faults its ``FaultSpec`` describes while the
checkers watch; a ``liveness`` phase first stops faults, restarts and heals a majority (the
"core") and then requires a leader and progress before the phase ends (its duration is the bound).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True, slots=True)
class LinkSpec:
    """How one directed link behaves. Defaults: a quiet LAN."""

    delay_ms: float = 1.0
    """One-way base delay."""
    jitter_ms: float = 0.2
    """Uniform extra delay in [0, jitter_ms) per packet; reorders packets that overlap."""
    loss: float = 0.0
    """Probability a packet is dropped."""
    duplicate: float = 0.0
    """Probability a packet is delivered twice (the copy with its own delay)."""
    reorder: float = 0.0
    """Probability a packet is held back by an extra uniform delay in [0, reorder_ms)."""
    reorder_ms: float = 50.0
    bandwidth_bps: float | None = None
    """Link bandwidth in bytes per second (FIFO serialisation per link); None = unlimited."""

    def __post_init__(self) -> None:
        for name in ("loss", "duplicate", "reorder"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"LinkSpec.{name} must be a probability, got {p}")
        if self.delay_ms < 0 or self.jitter_ms < 0 or self.reorder_ms < 0:
            raise ValueError("LinkSpec delays must be >= 0")
        if self.bandwidth_bps is not None and self.bandwidth_bps <= 0:
            raise ValueError("LinkSpec.bandwidth_bps must be > 0 or None")


@dataclass(frozen=True, slots=True)
class FaultSpec:
    """Random faults injected during a safety phase. A zero interval disables that fault."""

    crash_every_ms: float = 0.0
    """Mean time between crashes across the cluster (exponential); 0 = no crashes."""
    downtime_ms: tuple[float, float] = (50.0, 2000.0)
    """A crashed node restarts after a uniform time in this range."""
    partition_every_ms: float = 0.0
    """Mean time between new partitions (exponential); 0 = no partitions."""
    partition_ms: tuple[float, float] = (100.0, 3000.0)
    """A partition heals after a uniform time in this range."""
    asymmetric: float = 0.3
    """Fraction of partitions that block one direction only."""
    drift_ppm: int = 0
    """Each node's clock drifts by a uniform rate in [-drift_ppm, +drift_ppm] (set at boot)."""
    drift_every_ms: float = 0.0
    """Mean time between drift changes (a random running node gets a new rate); 0 = never."""
    persist_ms: tuple[float, float] = (0.0, 0.0)
    """Time to persist a Ready (fsync); a crash before it completes loses that Ready."""

    def __post_init__(self) -> None:
        for name in ("downtime_ms", "partition_ms", "persist_ms"):
            lo, hi = getattr(self, name)
            if lo < 0 or hi < lo:
                raise ValueError(f"FaultSpec.{name} must be 0 <= lo <= hi, got {(lo, hi)}")
        if not 0.0 <= self.asymmetric <= 1.0:
            raise ValueError("FaultSpec.asymmetric must be a probability")
        if not 0 <= self.drift_ppm < 1_000_000:
            raise ValueError("FaultSpec.drift_ppm must be in [0, 1e6)")


@dataclass(frozen=True, slots=True)
class ClientSpec:
    """Simulated clients proposing commands during the run."""

    clients: int = 2
    interval_ms: float = 50.0
    """Mean think time between a client's requests (exponential)."""
    timeout_ms: float = 1000.0
    """A request not acknowledged by then is abandoned (outcome unknown)."""


@dataclass(frozen=True, slots=True)
class Phase:
    """One phase of a run."""

    kind: Literal["safety", "liveness"]
    duration_ms: float
    link: LinkSpec = field(default_factory=LinkSpec)
    faults: FaultSpec = field(default_factory=FaultSpec)

    def __post_init__(self) -> None:
        if self.kind not in ("safety", "liveness"):
            raise ValueError(f"unknown phase kind {self.kind!r}")
        if self.duration_ms <= 0:
            raise ValueError("Phase.duration_ms must be > 0")


@dataclass(frozen=True, slots=True)
class Scenario:
    """A complete run description (without its seed)."""

    name: str
    nodes: int
    phases: tuple[Phase, ...]
    clients: ClientSpec = field(default_factory=ClientSpec)
    wire: bool = False
    """Encode and decode every message with the core's wire codec."""

    def __post_init__(self) -> None:
        if self.nodes < 1:
            raise ValueError("Scenario.nodes must be >= 1")
        if not self.phases:
            raise ValueError("Scenario needs at least one phase")

    def replace(self, **changes: Any) -> Scenario:
        """A copy with top-level fields changed."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (TOML-able apart from None bandwidth, which is left out)."""
        return _strip_none(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Scenario:
        """Build from a plain dict as produced by ``to_dict`` or read from TOML."""
        known = {"name", "nodes", "phases", "clients", "wire"}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown scenario keys: {unknown}")
        phases = tuple(
            Phase(
                kind=p["kind"],
                duration_ms=float(p["duration_ms"]),
                link=_build(LinkSpec, p.get("link", {})),
                faults=_build(FaultSpec, p.get("faults", {})),
            )
            for p in d["phases"]
        )
        return cls(
            name=str(d["name"]),
            nodes=int(d["nodes"]),
            phases=phases,
            clients=_build(ClientSpec, d.get("clients", {})),
            wire=bool(d.get("wire", False)),
        )


def _build(kind: type, d: dict[str, Any]) -> Any:
    names = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"unknown {kind.__name__} keys: {unknown}")
    return kind(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def _strip_none(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _strip_none(v) for k, v in x.items() if v is not None}
    if isinstance(x, list | tuple):
        return [_strip_none(v) for v in x]
    return x


# ---- presets -------------------------------------------------------------------------------------

_LAN = LinkSpec(delay_ms=2.0, jitter_ms=1.0)
_LOSSY = LinkSpec(delay_ms=5.0, jitter_ms=5.0, loss=0.05, duplicate=0.05, reorder=0.1)
_LIVE = Phase("liveness", 10_000.0, link=LinkSpec(delay_ms=5.0, jitter_ms=2.0, loss=0.01))


def preset(name: str, nodes: int = 5) -> Scenario:
    """A named scenario: calm, lossy, partitions, crashes, chaos."""
    safety_s = 10_000.0
    phases: dict[str, Phase] = {
        "calm": Phase("safety", safety_s, link=_LAN),
        "lossy": Phase("safety", safety_s, link=_LOSSY),
        "partitions": Phase(
            "safety",
            safety_s,
            link=LinkSpec(delay_ms=5.0, jitter_ms=3.0, reorder=0.05),
            faults=FaultSpec(partition_every_ms=800.0, drift_ppm=200),
        ),
        "crashes": Phase(
            "safety",
            safety_s,
            link=LinkSpec(delay_ms=5.0, jitter_ms=3.0, loss=0.01),
            faults=FaultSpec(crash_every_ms=700.0, persist_ms=(0.0, 2.0), drift_ppm=200),
        ),
        "chaos": Phase(
            "safety",
            safety_s,
            link=_LOSSY,
            faults=FaultSpec(
                crash_every_ms=900.0,
                partition_every_ms=900.0,
                persist_ms=(0.0, 3.0),
                drift_ppm=5_000,
                drift_every_ms=2_000.0,
            ),
        ),
    }
    if name not in phases:
        raise ValueError(f"unknown preset {name!r}; known: {sorted(phases)}")
    return Scenario(name=name, nodes=nodes, phases=(phases[name], _LIVE))


PRESETS = ("calm", "lossy", "partitions", "crashes", "chaos")
