"""Watchers follow each node's store by prefix watch across snapshots, restarts and membership
changes; a stream that skips an event is caught."""

from __future__ import annotations

import pytest

from consensus.kv import KvStore
from sim.cluster import ms
from sim.errors import InvariantViolation
from sim.kv_run import build, kv_preset, run_kv


@pytest.mark.parametrize("seed", [3, 8])
def test_watch_streams_stay_coherent_through_faults(seed: int) -> None:
    r = run_kv(kv_preset("mixed", 3), seed)
    assert r.ok, r.failure
    assert r.watch_events > 100


def test_resync_after_a_compacted_revision() -> None:
    """A watcher whose node restored a snapshot past its position re-reads and resumes."""
    runs = [run_kv(kv_preset("membership", 3), s) for s in range(6)]
    assert all(r.ok for r in runs), [r.failure for r in runs if not r.ok]
    assert sum(r.watch_resyncs for r in runs) > 0


def test_a_stream_that_drops_an_event_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    real = KvStore.watch

    def lossy(self: KvStore, prefix: str = "", since: int = 0):  # type: ignore[no-untyped-def]
        return [e for e in real(self, prefix, since) if e.revision % 13 != 0]

    monkeypatch.setattr(KvStore, "watch", lossy)
    h = build(kv_preset("calm", 3), seed=1)
    h.cluster.start()
    h.clients.start()
    with pytest.raises(InvariantViolation, match="watch on"):
        h.cluster.run_for(ms(3_000))
