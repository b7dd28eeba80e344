"""A trivial core used to test the simulator harness without Raft.

Every node holds an integer; every ``interval`` µs it sends it to every peer; a node that hears
a larger value adopts it and persists it. On boot a node starts from its disk. It follows the
``consensus.core.Core`` protocol and has a Ready (persist, then send) like Raft's.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from consensus.core import Micros, NodeId
from sim.adapter import Booted, SimNode


@dataclass(frozen=True, slots=True)
class ToyMsg:
    src: NodeId
    dst: NodeId
    value: int


@dataclass(slots=True)
class ToyReady:
    persist: int | None = None
    messages: list[ToyMsg] = field(default_factory=list)


class ToyCore:
    def __init__(
        self, id: NodeId, peers: Sequence[NodeId], value: int, interval: Micros, now: Micros
    ) -> None:
        self.id = id
        self.peers = sorted(p for p in peers if p != id)
        self.value = value
        self.interval = interval
        self.deadline = now
        self._ready = ToyReady()
        self.ticks: list[Micros] = []

    def step(self, msg: ToyMsg, now: Micros) -> None:
        if msg.value > self.value:
            self.value = msg.value
            self._ready.persist = msg.value

    def tick(self, now: Micros) -> None:
        self.ticks.append(now)
        if now >= self.deadline:
            for p in self.peers:
                self._ready.messages.append(ToyMsg(self.id, p, self.value))
            self.deadline = now + self.interval

    def next_deadline(self) -> Micros | None:
        return self.deadline

    def has_ready(self) -> bool:
        return self._ready.persist is not None or bool(self._ready.messages)

    def ready(self) -> ToyReady:
        rd, self._ready = self._ready, ToyReady()
        return rd


class ToyAdapter:
    kind = "toy"

    def __init__(self, ids: Sequence[NodeId], interval: Micros = 10_000, codec_bug: bool = False):
        self.ids = list(ids)
        self.interval = interval
        self.codec_bug = codec_bug
        self.initial = {i: n * 10 for n, i in enumerate(sorted(ids))}

    def new_disk(self, node_id: NodeId) -> dict[str, int]:
        return {"value": self.initial[node_id]}

    def boot(self, node_id: NodeId, disk: dict[str, int], rng: random.Random, now: Micros):
        return Booted(ToyCore(node_id, self.ids, disk["value"], self.interval, now), [])

    def crash(self, node_id: NodeId, disk: dict[str, int]) -> dict[str, int]:
        return disk

    def persist(self, node: SimNode, ready: ToyReady) -> None:
        if ready.persist is not None:
            node.disk["value"] = ready.persist

    def messages(self, ready: ToyReady) -> list[ToyMsg]:
        return ready.messages

    def route(self, msg: ToyMsg) -> tuple[NodeId, NodeId]:
        return msg.src, msg.dst

    def apply(self, node: SimNode, ready: ToyReady, now: Micros) -> None:
        if ready.persist is not None:
            node.app.append(ready.persist)

    def advance(self, node: SimNode, ready: ToyReady) -> None:
        pass

    def encode(self, msg: ToyMsg) -> bytes:
        value = msg.value + 1 if self.codec_bug and msg.value > 0 else msg.value
        return json.dumps([msg.src, msg.dst, value]).encode()

    def decode(self, data: bytes) -> ToyMsg:
        src, dst, value = json.loads(data)
        return ToyMsg(src, dst, value)

    def size(self, msg: ToyMsg) -> int:
        return 32


class StuckCore(ToyCore):
    """Broken: its deadline never moves past now."""

    def tick(self, now: Micros) -> None:
        self.deadline = now
