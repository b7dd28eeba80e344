"""Namespaces: a symmetric partition (nftables) isolates the minority. It serves stale reads and
refuses linearizable writes with 503 while the majority keeps committing; after the heal it is
one mesh again, the minority has caught up, and the recorded history is linearizable."""

from __future__ import annotations

import http.client
import json
import random
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sim.linearizability import Verdict, check
from tests.netns.bed import Host, NetBed
from tests.netns.conftest import _netns_available, _swept, make_bed  # noqa: F401 (fixtures)
from tests.netns.nodes import RealNode, moltmesh
from tests.raft.history import Recorder, client, resolve_unknown_indices

pytestmark = [pytest.mark.netns, pytest.mark.integration]

MESH_PORT = "8471"
# LAN Raft timing, as the other process tests use: `local`'s 20-40 ms elections churn leaders
# on a loaded 2-core machine; SWIM stays `local` so the partition is noticed quickly.
ENV = {"MOLTMESH_MESH_SWIM": "local", "MOLTMESH_LOG_LEVEL": "warning",
       "MOLTMESH_RAFT_TIMING": "lan", "MOLTMESH_RAFT_STABILIZATION_S": "60"}  # fmt: skip


def api(bed: NetBed, host: Host, data_dir: Path) -> Callable[..., tuple[int, dict]]:
    """An HTTP caller for the node API of ``data_dir``, connecting from inside ``host``."""
    token = (data_dir / "api-token").read_text().strip()

    def call(method: str, path: str, body: bytes | None = None,
             timeout: float = 30.0) -> tuple[int, dict]:  # fmt: skip
        url = (data_dir / "api-url").read_text().strip()
        hostport = url.split("://", 1)[1]
        h, port = hostport.rsplit(":", 1)
        conn = http.client.HTTPConnection(h, int(port), timeout=timeout)
        sock = bed.socket(host, socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect((h, int(port)))
        conn.sock = sock
        try:
            conn.request(method, path, body=body,
                         headers={"Authorization": f"Bearer {token}"})  # fmt: skip
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read() or b"{}")
        finally:
            conn.close()

    return call


def wait(check_fn: Callable[[], object], what: str, timeout: float = 120.0) -> object:
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        try:
            last = check_fn()
        except OSError as e:
            last = e
        if last and not isinstance(last, OSError):
            return last
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what} (last: {last})")


@pytest.mark.timeout(300)
def test_partitioned_minority_serves_stale_reads_and_refuses_writes(
    make_bed: Callable[[int], NetBed],  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
) -> None:
    seed = random.randrange(2**32)
    print(f"seed {seed}")
    rng = random.Random(seed)
    bed = make_bed(3)
    hosts = bed.hosts
    dirs = [tmp_path / h.label for h in hosts]
    assert moltmesh(bed, hosts[0], "mesh", "init", "--data-dir", str(dirs[0])).returncode == 0
    holder = f"{hosts[0].address}:{MESH_PORT}"

    def node(i: int, *args: str) -> RealNode:
        return RealNode.start(bed, hosts[i], dirs[i], "--mesh-host", hosts[i].address,
                              "--mesh-port", MESH_PORT, *args, env=ENV)  # fmt: skip

    nodes = [node(0)]
    nodes[0].wait_serving()
    try:
        for i in (1, 2):
            tok = moltmesh(bed, hosts[0], "mesh", "token", "--data-dir", str(dirs[0]),
                           "--address", holder).stdout.strip()  # fmt: skip
            nodes.append(node(i, "--token", tok, "--seed", holder))
            nodes[i].wait_serving()
        calls = [api(bed, h, d) for h, d in zip(hosts, dirs, strict=True)]

        def raft(i: int) -> dict:
            code, body = calls[i]("GET", "/v1/raft/status", None, 5)
            return body if code == 200 else {}

        wait(lambda: len(raft(0).get("voters", [])) == 3, "3 voters")
        rec = Recorder()
        stop = threading.Event()
        threads = [threading.Thread(target=client, args=(rec, i, calls[i], rng.randrange(2**32),
                                                         stop), daemon=True)
                   for i in range(3)]  # fmt: skip
        for t in threads:
            t.start()
        wait(lambda: len(rec.ops) >= 30, "a first part of the history")
        assert calls[0]("PUT", "/v1/kv/before", b"1")[0] == 200
        wait(lambda: calls[2]("GET", "/v1/kv/before?consistency=stale")[0] == 200, "replicated")

        bed.partition([hosts[2]], hosts[:2])
        wait(lambda: raft(2) and raft(2).get("leader") is None, "the minority has no leader")
        # the majority keeps committing
        # (the minority may have led: the majority elects a new leader first)
        wait(lambda: raft(0).get("leader") not in (None, raft(2).get("node")), "majority leader")
        before = raft(0)["commit_index"]
        assert calls[0]("PUT", "/v1/kv/during", b"2", 10)[0] == 200
        assert raft(0)["commit_index"] > before
        # the minority: stale reads yes, linearizable writes and reads no (503, with a reason)
        code, got = calls[2]("GET", "/v1/kv/before?consistency=stale")
        assert code == 200 and got["value"] == "1"
        code, body = calls[2]("PUT", "/v1/kv/minority?timeout=1", b"no")
        assert code == 503 and body["reason"], body
        assert calls[2]("GET", "/v1/kv/before?timeout=1")[0] == 503
        n_during = len(rec.ops)
        wait(lambda: len(rec.ops) >= n_during + 20, "majority writes during the partition")

        bed.heal_all()
        wait(lambda: calls[2]("GET", "/v1/kv/during?consistency=stale")[0] == 200,
             "the minority caught up")  # fmt: skip
        wait(lambda: raft(2).get("leader") is not None, "one group again")
        stop.set()
        for t in threads:
            t.join(60)
        print(f"{len(rec.ops)} operations, {sum(o.ret is None for o in rec.ops)} unknown")
        result = check(resolve_unknown_indices(rec.ops))
        assert result.verdict is Verdict.OK, (seed, result.problems[:5])
    finally:
        codes = [n.stop() for n in reversed(nodes)]
    bad = [n for n, c in zip(reversed(nodes), codes, strict=True) if c != 0]
    assert not bad, "\n".join(f"{n.host.label}:\n" + "\n".join(n.stdout[-40:]) for n in bad)
