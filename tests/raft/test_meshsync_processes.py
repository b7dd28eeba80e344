"""Revocations and the mesh config travel through the cluster KV (issue 8), with real
``moltmesh node`` processes on loopback.

Four nodes, of which Raft makes 3 voters: the CA holder A, C (a voter, down during the
revocation), D (a voter) and B (the fourth, to be revoked; the group keeps its quorum, A and
D). A revokes B while C is down: the signed list lands in the KV key ``mesh/revocations``,
every live node holds the new serial and refuses B (dead in their views, its frames dropped as
``revoked``); C, restarted, catches up on the log and holds it too. The ``mesh/config`` key
written by the leader reads back the same on every node, and an update through the KV reaches
every node's mesh sync.

Revocations also travel by the admin broadcast and by the key ring catch-up a node runs when it
meets a gossip key it lacks, so which path reached C first is not fixed; the test asserts that
C's copy of the KV holds the list (the log carried it) and that C holds the same serial.
"""

from __future__ import annotations

import base64
import json
import signal

import pytest

from moltmesh.mesh import store
from tests.integration.nodeproc import run_cli
from tests.mesh.test_processes import counter, metrics
from tests.raft import procs
from tests.raft.procs import http, mesh_of, start, status, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]  # 6 node starts: 60+ s at load 15


def sync(node) -> dict:  # type: ignore[no-untyped-def]
    return status(node).get("mesh_sync", {})


def view(node) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """node id -> SWIM status in ``node``'s members view (empty when it does not answer)."""
    try:
        code, doc = http(node, "GET", "/v1/mesh/members", timeout=5)
    except OSError:
        return {}
    return {m["node"]: m["status"] for m in doc.get("members", [])} if code == 200 else {}


def refused(node, victim: str) -> bool:  # type: ignore[no-untyped-def]
    return view(node).get(victim, "dead") in ("dead", "left")


def test_a_revocation_and_the_mesh_config_travel_through_the_kv(tmp_path, monkeypatch):
    monkeypatch.setitem(procs.ENV, "MOLTMESH_DISCOVERY_ENABLED", "false")  # seeds: no mDNS
    with mesh_of(tmp_path, 4) as (dirs, running, seed):
        by_id = {store.load(p).node_id: p for p in dirs}
        nodes = [running[p] for p in dirs]
        voters = wait_for(lambda: len(v := status(nodes[0]).get("voters", [])) == 3
                          and all(len(view(n)) == 4 for n in nodes) and v,
                          "3 voters, 4 members")  # fmt: skip
        a_dir = dirs[0]
        assert store.load(a_dir).node_id in voters  # the founder stays a voter
        c_dir, d_dir = (by_id[v] for v in voters if by_id[v] != a_dir)
        (b_dir,) = set(dirs) - {a_dir, c_dir, d_dir}
        a, c, d = running[a_dir], running[c_dir], running[d_dir]
        ids = [store.load(p).node_id for p in (a_dir, b_dir, c_dir, d_dir)]
        before = sync(a)["revocation_serial"]

        # C goes down; A revokes B while C is away.
        c.stop(signal.SIGKILL)
        wait_for(lambda: refused(a, ids[2]) and refused(d, ids[2]), "C dead for A and D")
        out = run_cli("mesh", "revoke", "--data-dir", str(a_dir), ids[1])
        assert "revoked" in out, out
        serial = sync(a)["revocation_serial"]
        assert serial > before

        # The signed list is in the KV and every live node holds it, read from its own copy.
        code, kv = wait_for(lambda: (r := http(d, "GET", "/v1/kv/mesh/revocations"))[0] == 200
                            and r, "the revocation list in the KV")  # fmt: skip
        assert ids[1] in base64.b64decode(kv["value_b64"]).decode("latin-1")
        for n in (a, d):
            got = wait_for(lambda n=n: (s := sync(n)).get("kv_revocation_serial") == serial and s,
                           "the KV's list on every live node")  # fmt: skip
            assert got["revocation_serial"] == serial and ids[1] in got["revoked"], got

        # B is refused: dead (or gone) in the others' views, its frames dropped as revoked.
        wait_for(lambda: refused(a, ids[1]) and refused(d, ids[1]), "B refused by A and D")
        wait_for(lambda: sum(counter(metrics(n), 'moltmesh_mesh_dropped_frames_total{reason='
                                     '"revoked"') for n in (a, d)) >= 1,
                 "B's frames dropped as revoked")  # fmt: skip

        # C was down: restarted, its copy of the KV catches up and it holds the new serial.
        with start(c_dir, seed) as c2:
            got = wait_for(lambda: (s := sync(c2)) and s["kv_revocation_serial"] == serial
                           and s["revocation_serial"] == serial and s,
                           "the restarted node learns the revocation")  # fmt: skip
            assert ids[1] in got["revoked"] and got["config_mismatch"] == ""
            wait_for(lambda: refused(c2, ids[1]) and not refused(c2, ids[0]),
                     "the restarted node refuses B and sees A")  # fmt: skip

            # The mesh config round-trips: the leader's document reads back on every node...
            mesh_id = store.load(a_dir).mesh_id
            code, cfg = http(c2, "GET", "/v1/kv/mesh/config")
            assert code == 200, cfg
            doc = json.loads(cfg["value"])
            assert doc["mesh_id"] == mesh_id and doc["swim"] == "local"
            assert doc["ca_fingerprint"] == store.load(b_dir).ca_fingerprint
            # ... and an update through the KV (CAS on its revision) reaches every node's sync.
            new = json.dumps({**doc, "note": "set through the KV"}).encode()
            code, put = http(d, "PUT", f"/v1/kv/mesh/config?cas={cfg['mod_revision']}", new)
            assert code == 200, put
            for n in (a, c2, d):
                wait_for(lambda n=n: (sync(n).get("config") or {}).get("note")
                         == "set through the KV", "the updated mesh config everywhere")  # fmt: skip
                assert sync(n)["config_mismatch"] == ""
