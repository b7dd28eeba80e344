"""Helpers for real ``moltmesh node`` processes running Raft on loopback."""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from moltmesh.mesh import store
from tests.integration.nodeproc import NodeProcess, run_cli, running_node

ENV = {"MOLTMESH_MESH_SWIM": "local", "MOLTMESH_RAFT_TIMING": "lan",
       "MOLTMESH_RAFT_STABILIZATION_S": "2"}  # fmt: skip
"""Raft's ``lan`` timing (150-300 ms elections, 50 ms heartbeats), not ``local`` (20-40 ms): on
a loaded 2-core CI machine a node process is routinely stalled for more than 20 ms, and with
``local`` timing the group then changed leader several times a second (terms in the hundreds
within a minute) and a snapshot transfer or a write could not finish. Nothing here measures
election speed (bench/raft_mesh.py does)."""
FLAGS = ("--no-bundled-models", "--mesh-host", "127.0.0.1", "--mesh-port", "0")


def http(node: NodeProcess, method: str, path: str, body: bytes | None = None,
         timeout: float = 30.0) -> tuple[int, dict]:  # fmt: skip
    """One API call; returns (status, JSON body) whatever the status."""
    req = urllib.request.Request(f"{node.url}{path}", data=body, method=method,
                                 headers={"Authorization": f"Bearer {node.token}"})  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def status(node: NodeProcess) -> dict:
    try:
        code, body = http(node, "GET", "/v1/raft/status", timeout=5)
    except OSError:
        return {}
    return body if code == 200 else {}


def wait_for(check, what: str, timeout: float = 90.0):  # type: ignore[no-untyped-def]
    """Observe until ``check()`` returns something truthy (each observation is an HTTP call)."""
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        last = check()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what} (last: {last})")


def token(data_dir: Path) -> str:
    out = run_cli("mesh", "token", "--data-dir", str(data_dir))
    return out.strip()


@contextlib.contextmanager
def mesh_of(root: Path, n: int) -> Iterator[tuple[list[Path], dict[Path, NodeProcess], str]]:
    """``n`` nodes: the first ran ``mesh init``, the others joined by token and seed."""
    dirs = [root / f"n{i}" for i in range(n)]
    run_cli("mesh", "init", "--data-dir", str(dirs[0]))
    procs: dict[Path, NodeProcess] = {}
    with contextlib.ExitStack() as stack:
        procs[dirs[0]] = stack.enter_context(running_node(dirs[0], *FLAGS, env=ENV))
        seed = (store.mesh_dir(dirs[0]) / "stream-address").read_text().strip()
        for d in dirs[1:]:
            procs[d] = stack.enter_context(
                running_node(d, *FLAGS, "--token", token(dirs[0]), "--seed", seed, env=ENV)
            )
        yield dirs, procs, seed


def start(data_dir: Path, seed: str) -> contextlib.AbstractContextManager[NodeProcess]:
    """Restart the node of ``data_dir`` (on a new port) with ``seed``: the address of a node
    that is running now (a killed node's old address leads nowhere)."""
    return running_node(data_dir, *FLAGS, "--seed", seed, env=ENV)


def address_of(data_dir: Path) -> str:
    """The stream address the running node of ``data_dir`` listens on (a seed for others)."""
    return (store.mesh_dir(data_dir) / "stream-address").read_text().strip()
