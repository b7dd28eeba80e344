"""Raft over the mesh: commit latency and throughput of 3 real ``moltmesh node`` processes (fsync
on and off), side by side with PySyncObj (3 processes) in the same run; then leader ``kill -9``
→ next commit, over many trials, with the LAN timers (150–300 ms election timeouts).

How each side is driven (they are not the same API, so read the figures with this in mind):

- **moltmesh**: a client process (this one, aiohttp, keep-alive) sends ``PUT /v1/kv/{key}`` to
  the leader's HTTP API; a commit is the 200 answer: proposal, log append + fsync on the leader,
  replication over mutual TLS to the followers (who fsync before acknowledging), apply, answer.
- **PySyncObj**: the load runs inside the leader's process (a ``@replicated`` ``set``; latency with
  ``sync=True``, throughput with callbacks) — no HTTP hop. PySyncObj does not fsync (its journal
  file is off by default); settings tuned for latency: ``autoTickPeriod=0.001``,
  ``appendEntriesPeriod=0.001``, ``raftMinTimeout=0.15``, ``raftMaxTimeout=0.3``,
  ``appendEntriesUseBatch=True``.

Same payload for both: 100-byte values, keys ``k0..k999``.

    python bench/raft_mesh.py [--requests 400] [--seconds 5] [--trials 50] [--no-write]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from contextlib import redirect_stdout
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import write_section
from moltmesh.cli import main as cli
from moltmesh.mesh import store
from tests.integration.nodeproc import NodeProcess, running_node

FLAGS = ("--no-bundled-models", "--mesh-host", "127.0.0.1", "--mesh-port", "0",
         "--log-level", "warning")  # fmt: skip
VALUE = b"v" * 100
INFLIGHT = 64


def run_cli(*argv: str) -> str:
    buf = io.StringIO()
    with redirect_stdout(buf):
        code = cli(list(argv))
    if code != 0:
        raise RuntimeError(f"moltmesh {' '.join(argv)} failed")
    return buf.getvalue()


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(p * len(s)))]


def status(node: NodeProcess) -> dict:
    req = urllib.request.Request(f"{node.url}/v1/raft/status",
                                 headers={"Authorization": f"Bearer {node.token}"})  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=2) as resp:
            return json.loads(resp.read())
    except (OSError, ValueError):
        return {}


def wait_for(fn, what: str, timeout: float = 120.0):  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = fn()
        if v:
            return v
        time.sleep(0.02)
    raise RuntimeError(f"timed out waiting for {what}")


def leader(nodes: list[NodeProcess]) -> NodeProcess | None:
    for n in nodes:
        if n.proc.poll() is None and status(n).get("is_leader"):
            return n
    return None


@contextlib.contextmanager
def cluster(root: Path, env: dict[str, str]):  # type: ignore[no-untyped-def]
    dirs = [root / f"n{i}" for i in range(3)]
    run_cli("mesh", "init", "--data-dir", str(dirs[0]))
    with contextlib.ExitStack() as stack:
        nodes = [stack.enter_context(running_node(dirs[0], *FLAGS, env=env))]
        seed = (store.mesh_dir(dirs[0]) / "stream-address").read_text().strip()
        for d in dirs[1:]:
            tok = run_cli("mesh", "token", "--data-dir", str(dirs[0])).strip()
            nodes.append(stack.enter_context(
                running_node(d, *FLAGS, "--token", tok, "--seed", seed, env=env)))  # fmt: skip
        wait_for(lambda: len(status(nodes[0]).get("voters", [])) == 3, "3 voters")
        yield nodes, stack


async def http_load(node: NodeProcess, requests: int, seconds: float) -> dict[str, float]:
    import aiohttp

    headers = {"Authorization": f"Bearer {node.token}"}
    conn = aiohttp.TCPConnector(limit=INFLIGHT + 1)
    async with aiohttp.ClientSession(node.url, headers=headers, connector=conn) as s:
        lat: list[float] = []
        for i in range(requests):
            t0 = time.perf_counter()
            async with s.put(f"/v1/kv/k{i % 1000}", data=VALUE) as r:
                await r.read()
                assert r.status == 200, r.status
            lat.append(time.perf_counter() - t0)
        done = 0
        end = time.perf_counter() + seconds

        async def worker(w: int) -> None:
            nonlocal done
            i = w
            while time.perf_counter() < end:
                async with s.put(f"/v1/kv/k{i % 1000}", data=VALUE) as r:
                    await r.read()
                    if r.status == 200:
                        done += 1
                i += INFLIGHT

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(INFLIGHT)))
        elapsed = time.perf_counter() - t0
    return {"p50_ms": pct(lat, 0.5) * 1e3, "p99_ms": pct(lat, 0.99) * 1e3,
            "ops_s": done / elapsed}  # fmt: skip


def moltmesh_load(fsync: bool, requests: int, seconds: float) -> dict[str, float]:
    env = {"MOLTMESH_MESH_SWIM": "lan", "MOLTMESH_RAFT_TIMING": "lan",
           "MOLTMESH_RAFT_FSYNC": "true" if fsync else "false"}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp, cluster(Path(tmp), env) as (nodes, _):
        lead = wait_for(lambda: leader(nodes), "a leader")
        return asyncio.run(http_load(lead, requests, seconds))


# --- PySyncObj ----------------------------------------------------------------------------------


def pso_worker(port: int, partners: list[int], requests: int, seconds: float) -> None:
    """One PySyncObj node; the one that leads runs the load and prints its figures."""
    from pysyncobj import SyncObj, SyncObjConf, replicated

    class KV(SyncObj):
        def __init__(self) -> None:
            conf = SyncObjConf(autoTickPeriod=0.001, appendEntriesPeriod=0.001,
                               raftMinTimeout=0.15, raftMaxTimeout=0.3,
                               appendEntriesUseBatch=True, commandsWaitLeader=True)  # fmt: skip
            super().__init__(f"127.0.0.1:{port}", [f"127.0.0.1:{p}" for p in partners], conf)
            self.data: dict[str, bytes] = {}

        @replicated
        def set(self, key: str, value: bytes) -> int:
            self.data[key] = value
            return len(self.data)

    kv = KV()
    while not kv._isReady() or kv._getLeader() is None:
        time.sleep(0.01)
    time.sleep(0.5)
    if not kv._isLeader():
        time.sleep(seconds + requests * 0.02 + 10)
        return
    lat = []
    for i in range(requests):
        t0 = time.perf_counter()
        kv.set(f"k{i % 1000}", VALUE, sync=True, timeout=5)
        lat.append(time.perf_counter() - t0)
    sem = threading.BoundedSemaphore(INFLIGHT)
    done = [0]

    def cb(result: object, err: object) -> None:
        if err == 0:  # FAIL_REASON.SUCCESS
            done[0] += 1
        sem.release()

    t0 = time.perf_counter()
    end = t0 + seconds
    i = 0
    while time.perf_counter() < end:
        sem.acquire()
        kv.set(f"k{i % 1000}", VALUE, callback=cb)
        i += 1
    for _ in range(INFLIGHT):
        sem.acquire()
    elapsed = time.perf_counter() - t0
    print(json.dumps({"p50_ms": pct(lat, 0.5) * 1e3, "p99_ms": pct(lat, 0.99) * 1e3,
                      "ops_s": done[0] / elapsed}), flush=True)  # fmt: skip


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def pysyncobj_load(requests: int, seconds: float) -> dict[str, float]:
    ports = free_ports(3)
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "pso-node",
                str(p),
                ",".join(str(q) for q in ports if q != p),
                str(requests),
                str(seconds),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for p in ports
    ]
    try:
        outs = [p.communicate(timeout=seconds + requests * 0.05 + 60)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for out in outs:
        for line in out.splitlines():
            if line.startswith("{"):
                return json.loads(line)
    raise RuntimeError("no PySyncObj node reported figures")


# --- leader kill -> next commit -------------------------------------------------------------------


def put_ok(node: NodeProcess, key: str) -> bool:
    req = urllib.request.Request(f"{node.url}/v1/kv/{key}?timeout=0.2", data=VALUE,
                                 method="PUT",
                                 headers={"Authorization": f"Bearer {node.token}"})  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.HTTPError, OSError):
        return False


def failover_trials(trials: int) -> list[float]:
    env = {"MOLTMESH_MESH_SWIM": "lan", "MOLTMESH_RAFT_TIMING": "lan",
           "MOLTMESH_RAFT_STABILIZATION_S": "600"}  # fmt: skip
    out: list[float] = []
    with tempfile.TemporaryDirectory() as tmp, cluster(Path(tmp), env) as (nodes, stack):
        for t in range(trials):
            lead = wait_for(lambda: leader(nodes), "a leader")
            lead_id = status(lead).get("node")
            wait_for(lambda lid=lead_id: all(status(n).get("leader") == lid for n in nodes),
                     "every node follows the leader")  # fmt: skip
            others = [n for n in nodes if n is not lead]
            assert put_ok(others[0], "warm")
            t0 = time.perf_counter()
            os.kill(lead.proc.pid, signal.SIGKILL)
            lead.proc.wait()
            i = 0
            while not put_ok(others[i % 2], f"trial{t}"):
                i += 1
            out.append(time.perf_counter() - t0)
            print(f"trial {t}: {out[-1] * 1e3:.0f} ms", file=sys.stderr, flush=True)
            seed = (store.mesh_dir(others[0].data_dir) / "stream-address").read_text().strip()
            back = stack.enter_context(running_node(lead.data_dir, *FLAGS, "--seed", seed,
                                                    env=env))  # fmt: skip
            nodes[nodes.index(lead)] = back
            ref = others[0]
            wait_for(lambda b=back, r=ref: status(b).get("leader") is not None
                     and status(b)["applied_index"] >= status(r)["commit_index"] - 5,
                     "the restarted node caught up")  # fmt: skip
    return out


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "pso-node":
        port, partners, requests, seconds = sys.argv[2:6]
        pso_worker(int(port), [int(p) for p in partners.split(",")], int(requests),
                   float(seconds))  # fmt: skip
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=400, help="sequential commits (latency)")
    ap.add_argument("--seconds", type=float, default=5.0, help="throughput window, 64 in flight")
    ap.add_argument("--trials", type=int, default=50, help="leader kill trials")
    ap.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md")
    args = ap.parse_args()
    rows = []
    for name, fn in (
        ("moltmesh, fsync on", lambda: moltmesh_load(True, args.requests, args.seconds)),
        ("moltmesh, fsync off", lambda: moltmesh_load(False, args.requests, args.seconds)),
        ("PySyncObj 0.3 (no fsync)", lambda: pysyncobj_load(args.requests, args.seconds)),
    ):
        r = fn()
        rows.append((name, r))
        print(f"{name}: {r}", flush=True)
    kills = failover_trials(args.trials) if args.trials else []
    lines = ["| system | commit p50 (1 in flight) | p99 | throughput (64 in flight) |",
             "|---|---|---|---|"]  # fmt: skip
    for name, r in rows:
        lines.append(f"| {name} | {r['p50_ms']:.2f} ms | {r['p99_ms']:.2f} ms | "
                     f"{r['ops_s']:.0f} commits/s |")  # fmt: skip
    body = "\n".join(lines)
    body += (f"\n\n{args.requests} sequential commits for latency; {args.seconds:.0f} s with "
             f"{INFLIGHT} in flight for throughput; 100-byte values. moltmesh is measured "
             "end to end through its HTTP API from a separate client process; PySyncObj "
             "in-process on its leader (see the module docstring for its settings).")  # fmt: skip
    if kills:
        body += (f"\n\nLeader `kill -9` → next commit acknowledged through a follower "
                 f"({len(kills)} trials, LAN timers 150–300 ms): median "
                 f"{statistics.median(kills) * 1e3:.0f} ms, p90 {pct(kills, 0.9) * 1e3:.0f} ms, "
                 f"max {max(kills) * 1e3:.0f} ms.")  # fmt: skip
    print(body)
    if not args.no_write:
        cmd = "python bench/raft_mesh.py " + " ".join(sys.argv[1:])
        write_section("raft_mesh", "Raft over the mesh (3 processes)", cmd.strip(), body)


if __name__ == "__main__":
    main()
