"""Real ``moltmesh node`` processes on loopback: join by token and seed, key rotation while SWIM
runs, ``kill -9`` -> dead in every view, restart -> alive with a higher incarnation.

Views are read with ``moltmesh status --json`` (each call is one observation; no fixed sleeps).
"""

from __future__ import annotations

import contextlib
import json
import signal
import time
import urllib.request
from pathlib import Path

import pytest

from moltmesh.cli import main
from moltmesh.mesh import store
from tests.integration.nodeproc import NodeProcess, running_node

pytestmark = pytest.mark.integration

LOCAL = {"MOLTMESH_MESH_SWIM": "local"}
FLAGS = ("--no-bundled-models", "--mesh-host", "127.0.0.1", "--mesh-port", "0")
WAIT_S = 90.0  # observing views (each a TLS round trip) this long before giving up; loaded CI


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out + err


def view(capsys: pytest.CaptureFixture[str], data_dir: Path) -> dict[str, tuple[str, int]]:
    code, out = cli(capsys, "status", "--data-dir", str(data_dir), "--json")
    if code != 0:
        return {}
    return {m["node"]: (m["status"], m["incarnation"]) for m in json.loads(out)["members"]}


def wait_until(capsys, dirs: list[Path], check, what: str) -> dict[Path, dict]:  # type: ignore[no-untyped-def]
    views: dict[Path, dict] = {}
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        views = {d: view(capsys, d) for d in dirs}
        if all(check(v) for v in views.values()):
            return views
    raise AssertionError(f"timed out waiting for {what}: {views}")


def metrics(node: NodeProcess) -> str:
    req = urllib.request.Request(
        f"{node.url}/metrics", headers={"Authorization": f"Bearer {node.token}"}
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return resp.read().decode()


def counter(text: str, line_start: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(line_start))  # fmt: skip


def test_three_processes_rotate_keys_crash_and_restart(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    dirs = [tmp_path / n for n in ("a", "b", "c")]
    assert cli(capsys, "mesh", "init", "--data-dir", str(dirs[0]))[0] == 0
    with contextlib.ExitStack() as stack:
        a = stack.enter_context(running_node(dirs[0], *FLAGS, env=LOCAL))
        seed = (store.mesh_dir(dirs[0]) / "stream-address").read_text().strip()
        procs = [a]
        for d in dirs[1:]:
            code, token = cli(capsys, "mesh", "token", "--data-dir", str(dirs[0]))
            assert code == 0
            procs.append(stack.enter_context(
                running_node(d, *FLAGS, "--token", token.strip(), "--seed", seed, env=LOCAL)
            ))  # fmt: skip
        ids = [store.load(d).node_id for d in dirs]

        def all_alive(v: dict) -> bool:
            return set(v) >= set(ids) and all(v[i][0] == "alive" for i in ids)

        wait_until(capsys, dirs, all_alive, "three members alive everywhere")

        # The same view over the HTTP API, with each member's capability metadata.
        doc = procs[1].client().get_json("/v1/mesh/members")
        assert doc["node"] == ids[1]
        members = {m["node"]: m for m in doc["members"]}
        assert set(members) == set(ids)
        assert all(m["status"] == "alive" and m["tier"] for m in members.values())
        assert all(isinstance(m["models"], dict) for m in members.values())
        assert doc["raft"]["voters"] and doc["raft"]["term"] >= 1  # the Raft view rides along
        code, table = cli(capsys, "status", "--data-dir", str(dirs[0]))
        assert code == 0 and "raft: " in table and "voters" in table

        # Key rotation while SWIM runs: install, use, remove, each relayed to every member.
        old = store.load(dirs[0]).keyring.primary_id
        code, out = cli(capsys, "mesh", "keys", "install", "--data-dir", str(dirs[0]))
        assert code == 0 and "applied on every member" in out, out
        new = out.split("installed key ")[1].split(":")[0]
        for action, kid in (("use", new), ("remove", f"{old:08x}")):
            code, out = cli(capsys, "mesh", "keys", action, "--data-dir", str(dirs[0]), kid)
            assert code == 0 and "applied on every member" in out, out
        for d in dirs:
            ring = store.load(d).keyring
            assert [(f"{k.key_id:08x}", k.primary) for k in ring.list()] == [(new, True)]
        wait_until(capsys, dirs, all_alive, "everyone still alive after the rotation")
        for p in procs:
            text = metrics(p)
            assert counter(text, 'moltmesh_mesh_dropped_frames_total{reason="wrong_key"') == 0
            assert counter(text, 'moltmesh_mesh_events_total{kind="dead"}') == 0

        # kill -9 one node: suspected, then dead in every other view.
        victim_dir, victim_id = dirs[2], ids[2]
        before = view(capsys, dirs[0])[victim_id][1]
        procs[2].stop(signal.SIGKILL)
        survivors = dirs[:2]
        wait_until(capsys, survivors, lambda v: v.get(victim_id, ("",))[0] == "dead",
                   "the killed node dead everywhere")  # fmt: skip
        for p in procs[:2]:
            assert counter(metrics(p), 'moltmesh_mesh_events_total{kind="suspected"}') >= 1

        # Restart it: alive again everywhere, with a higher incarnation.
        stack.enter_context(running_node(victim_dir, *FLAGS, "--seed", seed, env=LOCAL))
        views = wait_until(capsys, dirs, all_alive, "the restarted node alive everywhere")
        assert all(views[d][victim_id][1] > before for d in survivors), views


def test_a_joined_node_without_seeds_meets_the_mesh_by_mdns_on_loopback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    dirs = [tmp_path / "a", tmp_path / "b"]
    assert cli(capsys, "mesh", "init", "--data-dir", str(dirs[0]))[0] == 0
    env = {**LOCAL, "MOLTMESH_DISCOVERY_PROBE": "false"}
    with contextlib.ExitStack() as stack:
        a = stack.enter_context(running_node(dirs[0], *FLAGS, env=env))
        code, token = cli(capsys, "mesh", "token", "--data-dir", str(dirs[0]))
        assert code == 0
        # The token names where to fetch a certificate; no --seed: SWIM peers come from mDNS.
        b = stack.enter_context(running_node(dirs[1], *FLAGS, "--token", token.strip(), env=env))
        ids = [store.load(d).node_id for d in dirs]
        wait_until(capsys, dirs, lambda v: all(v.get(i, ("",))[0] == "alive" for i in ids),
                   "both alive in both views, met by mDNS")  # fmt: skip
        # With no seeds, at least one side must have found the other by mDNS (the other may
        # have been reached by that side's push-pull before its own browser resolved anything).
        found = [counter(metrics(node), "moltmesh_discovery_candidates") for node in (a, b)]
        assert sum(found) >= 1, found
