"""Real node processes on loopback: the group forms by itself, the KV works from every node."""

from __future__ import annotations

import contextlib
import io
import json
import urllib.request

import pytest

from moltmesh.cli import main
from tests.raft.procs import http, mesh_of, status, wait_for


def metrics(node) -> str:  # type: ignore[no-untyped-def]
    req = urllib.request.Request(f"{node.url}/metrics",
                                 headers={"Authorization": f"Bearer {node.token}"})  # fmt: skip
    with urllib.request.urlopen(req, timeout=30) as resp:
        return resp.read().decode()


def cli_status(data_dir) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["status", "--data-dir", str(data_dir), "--json"])
    return code, buf.getvalue()


pytestmark = pytest.mark.integration


def test_three_processes_form_a_group_and_serve_the_kv(tmp_path):
    with mesh_of(tmp_path, 3) as (dirs, procs, _seed):
        nodes = list(procs.values())
        wait_for(lambda: len(status(nodes[0]).get("voters", [])) == 3, "3 voters")
        code, put = http(nodes[1], "PUT", "/v1/kv/cfg/a", b"hello")
        assert code == 200, put
        for n in nodes:
            code, got = http(n, "GET", "/v1/kv/cfg/a")
            assert code == 200 and got["value"] == "hello", got
            assert got["mod_revision"] == put["revision"]
        code, cas = http(nodes[2], "PUT", f"/v1/kv/cfg/a?cas={put['revision'] + 7}", b"x")
        assert code == 409 and cas["current"] == put["revision"]
        code, lst = http(nodes[2], "GET", "/v1/kv?prefix=cfg/&consistency=stale")
        assert code == 200 and [k["key"] for k in lst["kvs"]] == ["cfg/a"]
        code, w = http(nodes[0], "GET", f"/v1/kv/cfg/a?watch=1&since={put['revision']}")
        assert code == 200 and w["events"][0]["revision"] == put["revision"]
        code, gone = http(nodes[0], "DELETE", "/v1/kv/cfg/a")
        assert code == 200 and gone["changed"]
        assert http(nodes[1], "GET", "/v1/kv/cfg/a")[0] == 404
        # the mesh's settings live in the KV too, written by the leader
        code, cfg = wait_for(lambda: (r := http(nodes[2], "GET", "/v1/kv/mesh/config"))[0] == 200
                             and r, "mesh/config in the KV")  # fmt: skip
        assert '"mesh_id"' in cfg["value"]
        # status and metrics show the Raft view
        text = metrics(nodes[0])
        for name in ("moltmesh_raft_term", "moltmesh_raft_commit_index",
                     "moltmesh_raft_apply_index", "moltmesh_raft_proposals_total",
                     "moltmesh_raft_fsync_seconds_bucket"):  # fmt: skip
            assert name in text, name
        code, out = cli_status(dirs[1])
        assert code == 0 and json.loads(out)["raft"]["leader"] in json.loads(out)["raft"]["voters"]
