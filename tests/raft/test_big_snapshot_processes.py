"""Real ``moltmesh node`` processes with a 1 MiB mesh frame limit: a voter that was down and a
non-voting follower both catch up through a KV snapshot several times that size (issue 8).

Four nodes: 3 voters and one node following by watch stream (no learner slots). A voter that
does not lead and the follower are killed; 56 values of 64 KiB are written (3.5 MiB of state)
and the log is compacted behind a snapshot. Restarted, the voter receives the snapshot by Raft
InstallSnapshot and the follower by its FOLLOW stream, each in chunks that fit one frame: no
frame is dropped as oversize anywhere, and both end up with every value.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import signal

import pytest

from moltmesh.mesh import store
from tests.mesh.test_processes import counter, metrics
from tests.raft import procs
from tests.raft.procs import address_of, http, mesh_of, start, status, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]  # 6 node starts: 60+ s at load 15

FRAME = 1024 * 1024
VALUES = 56
VALUE = 64 * 1024


def value(i: int) -> bytes:
    return hashlib.sha256(b"v%d" % i).digest() * (VALUE // 32)


def stale(node, key: str) -> bytes | None:  # type: ignore[no-untyped-def]
    try:
        code, doc = http(node, "GET", f"/v1/kv/{key}?consistency=stale", timeout=5)
    except OSError:
        return None
    return base64.b64decode(doc["value_b64"]) if code == 200 else None


def test_a_voter_and_a_follower_catch_up_through_a_snapshot_over_the_frame_cap(
    tmp_path, monkeypatch
):
    monkeypatch.setitem(procs.ENV, "MOLTMESH_DISCOVERY_ENABLED", "false")  # seeds: no mDNS
    monkeypatch.setitem(procs.ENV, "MOLTMESH_MESH_MAX_FRAME_BYTES", str(FRAME))
    monkeypatch.setitem(procs.ENV, "MOLTMESH_RAFT_SNAPSHOT_ENTRIES", "16")
    monkeypatch.setitem(procs.ENV, "MOLTMESH_RAFT_MAX_LEARNERS", "0")
    monkeypatch.setitem(procs.ENV, "MOLTMESH_RAFT_STABILIZATION_S", "120")  # the voter stays
    with mesh_of(tmp_path, 4) as (dirs, nodes, _seed), contextlib.ExitStack() as stack:
        by_id = {store.load(d).node_id: d for d in dirs}
        a = nodes[dirs[0]]
        st = wait_for(lambda: len((s := status(a)).get("voters", [])) == 3 and s.get("leader")
                      and s, "3 voters and a leader")  # fmt: skip
        lagging = next(by_id[v] for v in st["voters"] if v != st["leader"])
        (follower,) = set(dirs) - {by_id[v] for v in st["voters"]}
        wait_for(lambda: status(nodes[follower]).get("member") is False, "a follower")
        behind = status(nodes[lagging])["applied_index"]
        live_dirs = [by_id[v] for v in st["voters"] if by_id[v] != lagging]
        live = [nodes[d] for d in live_dirs]  # the quorum left (A itself may be the lagging one)
        for d in (lagging, follower):
            nodes[d].stop(signal.SIGKILL)

        for i in range(VALUES):
            code, put = http(live[i % 2], "PUT", f"/v1/kv/big/{i:03d}", value(i))
            assert code == 200, put
        wait_for(lambda: status(live[0]).get("first_index", 0) > behind + 1,
                 "the log compacted past the lagging voter")  # fmt: skip
        snaps = list((live_dirs[0] / "raft" / "snap").glob("snap-*.snap"))
        assert snaps and snaps[0].stat().st_size > 2 * FRAME, snaps

        seed = address_of(live_dirs[0])  # the founder's may be dead (it may be the lagging one)
        voter = stack.enter_context(start(lagging, seed))
        follow = stack.enter_context(start(follower, seed))
        last = f"big/{VALUES - 1:03d}"
        for node in (voter, follow):
            wait_for(lambda node=node: stale(node, last) == value(VALUES - 1),
                     "the restarted node holds the last value", timeout=60)  # fmt: skip
            assert all(stale(node, f"big/{i:03d}") == value(i) for i in (0, VALUES // 2))
        vt = status(voter)["transfer"]
        assert vt["raft_snapshots_installed"] >= 1 and vt["raft_snapshots_refused"] == 0, vt
        ft = status(follow)["transfer"]
        assert ft["snapshots_installed"] >= 1 and ft["snapshots_refused"] == 0, ft
        assert ft["snapshot_chunks"] >= 3, ft  # > 2 MiB in chunks of at most half a frame
        installed = "moltmesh_raft_transfer_snapshots_installed_total"
        assert counter(metrics(voter), installed + '{path="raft"') >= 1
        assert counter(metrics(follow), installed + '{path="follow"') >= 1
        for node in (*live, voter, follow):
            assert status(node)["transfer"]["oversize_dropped"] == 0
            text = metrics(node)
            assert counter(text, 'moltmesh_mesh_dropped_frames_total{reason="oversize"') == 0
            oversize = "moltmesh_raft_transfer_oversize_dropped_total"
            assert counter(text, oversize + '{where="transport"') == 0
