"""Watchers: one per node, following its KV store by prefix watch as a non-voting member would
(DESIGN §3: "every other member follows committed state through a watch stream").

Each watcher keeps a mirror of the keys under ``prefix`` and the revision to resume from. After
every Ready its node applies, it asks ``store.watch(prefix, since=next)`` and applies the events
to its mirror, checking on the way that the stream is coherent:

- every event's ``prev`` is exactly what the mirror holds for the key (no change missed, none
  repeated, in revision order), and a PUT's ``kv.mod_revision`` is the event's revision;
- once applied, the mirror equals ``store.range(prefix, revision=next - 1)``.

A compacted ``since`` (``CompactedRevisionError``: the node restored a newer snapshot, or
history was trimmed) makes the watcher re-read the prefix with ``range`` and resume after the
revision it read — the recovery a real watcher performs (HTTP 410). A watcher survives its
node's crash and resumes against the restarted store, which may be behind it for a while
(watches from the future return nothing until it catches up).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from consensus.kv import CompactedRevisionError, EventKind, KeyValue

from .adapter import SimNode
from .cluster import Cluster, Observer
from .errors import InvariantViolation
from .kv_adapter import KvApp


@dataclass(slots=True)
class Watcher:
    mirror: dict[str, KeyValue] = field(default_factory=dict)
    next: int = 1
    events: int = 0
    resyncs: int = 0


class KvWatchers(Observer):
    """A watcher per node of ``cluster``; raises ``InvariantViolation`` on an incoherent
    stream (see the module docstring)."""

    def __init__(self, cluster: Cluster, prefix: str = "") -> None:
        self.prefix = prefix
        self.watchers = {i: Watcher() for i in cluster.ids}

    @property
    def events(self) -> int:
        return sum(w.events for w in self.watchers.values())

    @property
    def resyncs(self) -> int:
        return sum(w.resyncs for w in self.watchers.values())

    def after_apply(self, cluster: Cluster, node: SimNode, ready: Any) -> None:
        app: KvApp = node.app
        store = app.store
        w = self.watchers[node.id]
        try:
            events = store.watch(self.prefix, since=w.next)
        except CompactedRevisionError:
            w.mirror = {kv.key: kv for kv in store.range(self.prefix)}
            w.next = store.applied_index + 1
            w.resyncs += 1
            return
        for ev in events:
            have = w.mirror.get(ev.key)
            if ev.prev != have:
                raise InvariantViolation(
                    f"watch on {node.id}: event at {ev.revision} on {ev.key!r} has prev "
                    f"{ev.prev!r} but the watcher holds {have!r}",
                    time_us=cluster.now,
                )
            if ev.kind is EventKind.PUT:
                if ev.kv is None or ev.kv.mod_revision != ev.revision:
                    raise InvariantViolation(
                        f"watch on {node.id}: PUT event at {ev.revision} carries {ev.kv!r}",
                        time_us=cluster.now,
                    )
                w.mirror[ev.key] = ev.kv
            else:
                w.mirror.pop(ev.key, None)
            w.events += 1
        if events:
            w.next = events[-1].revision + 1
        upto = w.next - 1
        if store.compacted <= upto <= store.revision:
            want = {kv.key: kv for kv in store.range(self.prefix, revision=upto)}
            if want != w.mirror:
                raise InvariantViolation(
                    f"watch on {node.id}: mirror at revision {upto} differs from the store "
                    f"({sorted(w.mirror)} vs {sorted(want)})",
                    time_us=cluster.now,
                )
