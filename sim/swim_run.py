"""SWIM runs in the simulator: a recorder of membership events, convergence checks, and the
measurements of issue 5 (dissemination, detection, false positives, load).

Times reported are virtual seconds. Every function takes a seed and is deterministic in it; a
failing run can be replayed from its seed alone.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from consensus.core import MICROS_PER_SECOND, Micros, NodeId
from consensus.swim_config import SwimConfig
from consensus.swim_messages import Meta
from consensus.swim_types import EventKind, SwimEvent

from .adapter import SimNode
from .cluster import Cluster, Observer
from .kernel import derive_rng
from .scenario import LinkSpec
from .swim_cluster import SwimAdapter, SwimCluster

S = MICROS_PER_SECOND
CHECK_EVERY_US = 100_000
"""How often convergence is checked while waiting for it (virtual time)."""


def node_ids(n: int) -> list[NodeId]:
    """``n`` node ids that sort in numeric order: n000, n001, ..."""
    width = max(3, len(str(n - 1)))
    return [f"n{i:0{width}d}" for i in range(n)]


@dataclass(frozen=True, slots=True)
class Seen:
    """One event as observed: virtual time, observing node, event."""

    at: Micros
    observer: NodeId
    event: SwimEvent


class SwimRecorder(Observer):
    """Records every membership event with its virtual time; optional per-event hooks."""

    def __init__(self) -> None:
        self.events: list[Seen] = []
        self.hooks: list[Callable[[Seen], None]] = []

    def after_apply(self, cluster: Cluster, node: SimNode, ready: Any) -> None:
        for ev in ready.events:
            seen = Seen(cluster.now, node.id, ev)
            self.events.append(seen)
            for hook in self.hooks:
                hook(seen)

    def of_kind(self, kind: EventKind) -> list[Seen]:
        return [s for s in self.events if s.event.kind == kind]


def build(
    n: int,
    seed: int,
    config: SwimConfig,
    link: LinkSpec | None = None,
    *,
    bootstrap: bool = True,
    wire: bool = False,
) -> tuple[SwimCluster, SwimRecorder]:
    """A started cluster of ``n`` SWIM nodes and its event recorder."""
    adapter = SwimAdapter(config, node_ids(n), bootstrap=bootstrap)
    cluster = SwimCluster(adapter, seed, link or LinkSpec(), wire=wire)
    recorder = SwimRecorder()
    cluster.add_observer(recorder)
    cluster.start()
    return cluster, recorder


def view_problems(cluster: SwimCluster, expect_live: list[NodeId] | None = None) -> list[str]:
    """Why the running nodes do not (yet) share one view; empty when converged.

    Converged means: every running node sees exactly the running nodes as live (alive or
    suspect — and none suspect), and all agree on every member's incarnation and metadata
    version.
    """
    up = expect_live if expect_live is not None else cluster.up_ids()
    problems: list[str] = []
    reference: dict[NodeId, tuple[int, int]] | None = None
    for i in up:
        core = cluster.core(i)
        live = core.live_members()
        if live != up:
            missing = sorted(set(up) - set(live))
            extra = sorted(set(live) - set(up))
            problems.append(f"{i}: missing {missing[:5]} extra {extra[:5]}")
            continue
        versions: dict[NodeId, tuple[int, int]] = {}
        for m in core.members():
            if m.node in live:
                if m.status.name != "ALIVE":
                    problems.append(f"{i}: {m.node} is {m.status.name}")
                versions[m.node] = (m.incarnation, m.meta_version)
        if reference is None:
            reference = versions
        elif versions != reference:
            diff = sorted(k for k in versions if versions[k] != reference.get(k))
            problems.append(f"{i}: versions differ for {diff[:5]}")
    return problems


def run_until_converged(cluster: SwimCluster, bound: Micros) -> Micros | None:
    """Run until the views converge (checked every 100 ms); the time it took, or None."""
    start = cluster.now
    while cluster.now - start <= bound:
        if not view_problems(cluster):
            return cluster.now - start
        cluster.run_for(CHECK_EVERY_US)
    return None


# ---- measurements -------------------------------------------------------------------------


def dissemination_times(
    n: int,
    seed: int,
    config: SwimConfig,
    loss: float = 0.0,
    updates: int = 1,
    spacing_s: float = 0.5,
    link: LinkSpec | None = None,
) -> list[float]:
    """Seconds until each of ``updates`` metadata updates reaches every other member.

    Update k is published by its own random member (all distinct) at ``k * spacing_s`` after a
    2 s warm-up, so several may be in flight together and share packets, as in a busy cluster
    (each update is ~30 bytes of a 1400-byte budget); each is timed on its own. Building a
    large cluster once for many samples is what makes 1000-node figures affordable.
    """
    if updates > n:
        raise ValueError("at most one update per member")
    cluster, recorder = build(n, seed, config, link or LinkSpec(loss=loss))
    cluster.run_for(2 * S)
    rng = derive_rng(seed, "measure")
    origins = rng.sample(list(cluster.ids), updates)
    index = {o: k for k, o in enumerate(origins)}
    reached = [0] * updates
    started: list[Micros] = [0] * updates
    finished: list[Micros | None] = [None] * updates
    remaining = [updates]

    def hook(seen: Seen) -> None:
        k = index.get(seen.event.node)
        if k is not None and seen.event.kind == EventKind.UPDATED:
            reached[k] += 1
            if reached[k] == n - 1:
                finished[k] = seen.at
                remaining[0] -= 1

    def publish(k: int) -> None:
        origin = origins[k]
        started[k] = cluster.now
        meta = Meta(origin, tier="heavy")
        cluster.call(origin, lambda core, now: core.set_meta(meta, now))

    recorder.hooks.append(hook)
    for k in range(updates):
        cluster.kernel.after(int(k * spacing_s * S), publish, k)
    cluster.run_for(int((updates * spacing_s + 60) * S), stop=lambda: remaining[0] == 0)
    if remaining[0]:
        raise AssertionError(f"seed {seed}: {remaining[0]} updates did not reach everyone")
    return [(f - s0) / S for f, s0 in zip(finished, started, strict=True) if f is not None]


def dissemination_time(n: int, seed: int, config: SwimConfig, loss: float = 0.0) -> float:
    """Seconds until a metadata update from one member reaches every other member."""
    return dissemination_times(n, seed, config, loss, 1)[0]


@dataclass(frozen=True, slots=True)
class Detection:
    """Seconds from a crash to the first suspicion and to the last view declaring it dead."""

    first_suspicion: float
    all_dead: float


def detection_time(
    n: int, seed: int, config: SwimConfig, loss: float = 0.0, link: LinkSpec | None = None
) -> Detection:
    """Crash one member of a converged cluster; time its suspicion and death in every view."""
    cluster, recorder = build(n, seed, config, link or LinkSpec(loss=loss))
    cluster.run_for(2 * S)
    victim = derive_rng(seed, "measure").choice(cluster.ids)
    first: list[Micros] = []
    dead: set[NodeId] = set()  # only counted, never iterated

    def hook(seen: Seen) -> None:
        if seen.event.node != victim:
            return
        if seen.event.kind == EventKind.SUSPECTED and not first:
            first.append(seen.at)
        elif seen.event.kind == EventKind.DEAD:
            dead.add(seen.observer)

    recorder.hooks.append(hook)
    t0 = cluster.now
    cluster.crash(victim)
    cluster.run_for(300 * S, stop=lambda: len(dead) >= n - 1)
    if len(dead) < n - 1 or not first:
        raise AssertionError(f"seed {seed}: {len(dead)}/{n - 1} saw {victim} dead in 300 s")
    return Detection((first[0] - t0) / S, (cluster.now - t0) / S)


ANOMALIES = ("stall", "blocked", "slow")
"""How the chosen members misbehave in ``false_positives`` (see there)."""


@dataclass(slots=True)
class FalsePositives:
    """What a run with no crashes got wrong, counted per view (one event at one observer).

    No member crashes, so every DEAD is false, and so is every suspicion of a *healthy* member
    (one never made to stall or be slow). The *stalled* members are those made to stall or be
    slow again and again (the field names say "stalled" for every kind of anomaly); a suspicion
    of one while it does not answer in time is a correct detection of unresponsiveness, but it
    must refute, so its deaths are false too. Counts are split healthy/stalled by the member the
    event is about:

    - ``suspicions_*``: SUSPECTED events (the member entered SUSPECT in that view);
    - ``accusations_*``: of those, raised by the observer's own failed probe (first-hand);
    - ``deaths_*``: DEAD events (a view declaring a running member dead);
    - ``declarations_*``: of those, declared by the observer's own suspicion timer (what
      memberlist logs as "Marking X as failed, suspect timeout reached");
    - ``deaths_of_healthy_at_stalled``: DEAD events of healthy members in the views of stalled
      or slow members (the slow detector's own false positives);
    - ``deaths_while_stalled``: DEAD events about a member stalled or slow at that very moment;
      the rest of ``deaths_of_stalled`` came after its anomaly ended (a refutation too late);
    - ``incidents``: distinct (member, incarnation) pairs declared dead in at least one view;
    - ``stalls``: anomaly periods started (stalls or slow periods).
    """

    suspicions_of_healthy: int = 0
    suspicions_of_stalled: int = 0
    accusations_of_healthy: int = 0
    accusations_of_stalled: int = 0
    deaths_of_healthy: int = 0
    deaths_of_stalled: int = 0
    declarations_of_healthy: int = 0
    declarations_of_stalled: int = 0
    deaths_of_healthy_at_stalled: int = 0
    deaths_while_stalled: int = 0
    incidents: int = 0
    stalls: int = 0
    victims: list[NodeId] = field(default_factory=list)

    @property
    def deaths(self) -> int:
        """Every DEAD event (healthy and stalled members)."""
        return self.deaths_of_healthy + self.deaths_of_stalled

    @property
    def declarations(self) -> int:
        """Every DEAD declared by the observer's own timer."""
        return self.declarations_of_healthy + self.declarations_of_stalled

    @property
    def suspicions(self) -> int:
        """Every SUSPECTED event."""
        return self.suspicions_of_healthy + self.suspicions_of_stalled


def false_positives(
    n: int,
    seed: int,
    config: SwimConfig,
    *,
    loss: float = 0.01,
    stall_fraction: float = 0.02,
    stall_s: tuple[float, float] = (1.0, 5.0),
    gap_s: tuple[float, float] = (1.0, 10.0),
    duration_s: float = 60.0,
    link: LinkSpec | None = None,
    anomaly: str = "stall",
    slow_period_s: tuple[float, float] = (5.0, 20.0),
) -> FalsePositives:
    """Run with packet loss while ``stall_fraction`` of members (at least one) misbehave again
    and again, separated by gaps uniform in ``gap_s``; count false suspicions and deaths (see
    ``FalsePositives``). ``link`` (delay, jitter, loss...) replaces ``loss`` when given.

    ``anomaly`` picks how (see ``SwimCluster``):

    - ``"stall"``: the process pauses for a time uniform in ``stall_s``: no timer, no packet;
    - ``"blocked"``: its receive path is blocked for a time uniform in ``stall_s`` while its
      timers fire on time (packets queue and are read when the block ends);
    - ``"slow"``: for a period uniform in ``slow_period_s`` every packet reaches its core a lag
      uniform in ``stall_s`` (one draw per period) after it arrived, timers firing on time.
    """
    if anomaly not in ANOMALIES:
        raise ValueError(f"anomaly must be one of {ANOMALIES}")
    cluster, recorder = build(n, seed, config, link or LinkSpec(loss=loss))
    rng = derive_rng(seed, "stalls")
    stallers = sorted(rng.sample(cluster.ids, max(1, round(n * stall_fraction))))
    out = FalsePositives()
    _schedule_stalls(cluster, stallers, rng, stall_s, gap_s, out, anomaly, slow_period_s)

    def while_stalled(seen: Seen) -> None:
        node = seen.event.node
        if seen.event.kind == EventKind.DEAD and (cluster.stalled(node) or cluster.is_slow(node)):
            out.deaths_while_stalled += 1

    recorder.hooks.append(while_stalled)
    cluster.run_for(int(duration_s * S))
    stalled = frozenset(stallers)
    incidents: set[tuple[NodeId, int]] = set()  # only counted, never iterated
    for seen in recorder.events:
        ev = seen.event
        first_hand = ev.source == seen.observer
        of_stalled = ev.node in stalled
        if ev.kind == EventKind.SUSPECTED:
            if of_stalled:
                out.suspicions_of_stalled += 1
                out.accusations_of_stalled += first_hand
            else:
                out.suspicions_of_healthy += 1
                out.accusations_of_healthy += first_hand
        elif ev.kind == EventKind.DEAD:
            if of_stalled:
                out.deaths_of_stalled += 1
                out.declarations_of_stalled += first_hand
            else:
                out.deaths_of_healthy += 1
                out.declarations_of_healthy += first_hand
                out.deaths_of_healthy_at_stalled += seen.observer in stalled
            incidents.add((ev.node, ev.incarnation))
            out.victims.append(ev.node)
    out.incidents = len(incidents)
    return out


def _schedule_stalls(
    cluster: SwimCluster,
    stallers: list[NodeId],
    rng: random.Random,
    stall_s: tuple[float, float],
    gap_s: tuple[float, float],
    out: FalsePositives,
    anomaly: str = "stall",
    slow_period_s: tuple[float, float] = (5.0, 20.0),
) -> None:
    def next_stall(node: NodeId) -> None:
        length = int(rng.uniform(*stall_s) * S)
        if anomaly == "stall":
            cluster.stall(node, length)
        elif anomaly == "blocked":
            cluster.slow(node, length, None)
        else:
            lag, length = length, int(rng.uniform(*slow_period_s) * S)
            cluster.slow(node, length, lag)
        out.stalls += 1
        cluster.kernel.after(length + int(rng.uniform(*gap_s) * S), next_stall, node)

    for node in stallers:
        cluster.kernel.after(int(rng.uniform(*gap_s) * S), next_stall, node)


@dataclass(frozen=True, slots=True)
class LoadFigures:
    """Traffic sent per member per second in steady state."""

    packets: float
    packet_bytes: float
    streams: float
    stream_bytes: float


def steady_load(
    n: int,
    seed: int,
    config: SwimConfig,
    window_s: float = 120.0,
    link: LinkSpec | None = None,
) -> LoadFigures:
    """Messages and bytes sent per member per second over ``window_s`` after a warm-up."""
    cluster, _ = build(n, seed, config, link)
    cluster.run_for(5 * S)
    p0, s0 = (
        (cluster.packets.messages, cluster.packets.bytes),
        (
            cluster.streams.messages,
            cluster.streams.bytes,
        ),
    )
    cluster.run_for(int(window_s * S))
    per = n * window_s
    return LoadFigures(
        (cluster.packets.messages - p0[0]) / per,
        (cluster.packets.bytes - p0[1]) / per,
        (cluster.streams.messages - s0[0]) / per,
        (cluster.streams.bytes - s0[1]) / per,
    )
