"""Raft over the mesh: commit latency and throughput of 3 real ``moltmesh node`` processes (fsync
on and off), side by side with PySyncObj (3 processes) in the same run; then leader ``kill -9``
→ next commit, over many trials, with the LAN timers (150–300 ms election timeouts).

How each row is driven:

- **moltmesh, HTTP**: 3 ``moltmesh node`` processes; a client process (this one, aiohttp,
  keep-alive) sends ``PUT /v1/kv/{key}`` to the leader's HTTP API; a commit is the 200 answer:
  proposal, replication over mutual TLS to the followers (the leader's appends leave while it
  fsyncs its own copy; followers fsync before acknowledging), apply, answer.
- **moltmesh, in-process**: the same 3-node group, but the ``mesh init`` node (it founds the
  group, so it leads) runs in THIS process through the embedding API (``moltmesh.Node``, uvloop
  on its own thread) and the load calls ``await node.kv.put(key, value)`` there — the same shape
  as PySyncObj's load; the other two peers are ``moltmesh node`` processes. A commit is the
  return of ``put``: applied on the leader after a quorum persisted it. The throughput window
  also measures the CPU time per commit of each of the 3 processes (``/proc``) and the leader's
  Readies, fsyncs and RAFT envelopes per commit.
- **PySyncObj**: the load runs inside the leader's process (a ``@replicated`` ``set``; latency with
  ``sync=True``, throughput with callbacks) — no HTTP hop. PySyncObj does not fsync (its journal
  file is off by default); settings tuned for latency: ``autoTickPeriod=0.001``,
  ``appendEntriesPeriod=0.001``, ``raftMinTimeout=0.15``, ``raftMaxTimeout=0.3``,
  ``appendEntriesUseBatch=True``.

Same payload for both: 100-byte values, keys ``k0..k999``.

    python bench/raft_mesh.py [--requests 400] [--seconds 5] [--rounds 3] [--trials 50] [--no-write]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import write_section
from moltmesh.mesh import store
from tests.integration.nodeproc import NodeProcess, run_cli, running_node

FLAGS = ("--no-bundled-models", "--mesh-host", "127.0.0.1", "--mesh-port", "0",
         "--log-level", "warning")  # fmt: skip
VALUE = b"v" * 100
INFLIGHT = 64
Load = Callable[..., Awaitable[dict[str, float]]]  # (node, requests, seconds, follower pids)


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
        nodes += join_two(dirs, stack, env)
        wait_for(lambda: len(status(nodes[0]).get("voters", [])) == 3, "3 voters")
        yield nodes, stack


def join_two(dirs: list[Path], stack: contextlib.ExitStack, env: dict[str, str]) -> list:  # type: ignore[type-arg]
    """Start ``moltmesh node`` processes on ``dirs[1:]``, joining the mesh ``dirs[0]`` founded."""
    seed = (store.mesh_dir(dirs[0]) / "stream-address").read_text().strip()
    out = []
    for d in dirs[1:]:
        tok = run_cli("mesh", "token", "--data-dir", str(dirs[0])).strip()
        out.append(stack.enter_context(
            running_node(d, *FLAGS, "--token", tok, "--seed", seed, env=env)))  # fmt: skip
    return out


class InProcessLeader:
    """The ``mesh init`` node run in THIS process through the embedding API (``moltmesh.Node``,
    ``node.kv``) on its own event loop thread (uvloop when installed, as ``moltmesh node``
    uses); it founds the group, so it leads. ``run(coro_fn)`` runs ``coro_fn(node)`` there."""

    def __init__(self, data_dir: Path, env: dict[str, str]) -> None:
        from moltmesh.config import load_config

        overrides = {"data_dir": data_dir, "runtime.bundled_models": False, "api.port": 0,
                     "mesh.host": "127.0.0.1", "mesh.port": 0, "log.level": "warning"}  # fmt: skip
        self.config = load_config(env={**os.environ, **env}, overrides=overrides)
        try:
            import uvloop

            self.loop = uvloop.new_event_loop()
        except ImportError:
            self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.node = None

    def __enter__(self) -> InProcessLeader:
        from moltmesh.node import Node

        self.thread.start()
        self.node = Node(self.config, serve_api=False)
        self.run(lambda n: n.start())
        return self

    def run(self, fn, timeout: float = 300.0):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(fn(self.node), self.loop).result(timeout)

    def raft_status(self) -> dict:
        async def get(n):  # type: ignore[no-untyped-def]
            return n.raft_ref.runtime.status()

        return self.run(get)

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self.run(lambda n: n.stop(), timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def raft_counters(node) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """The in-process leader's Ready, fsync and RAFT-envelope counts and commit index so far."""
    rt = node.raft_ref.runtime
    d = rt.driver
    return {"readies": d.stats.readies, "fsyncs": d.stats.fsync_count,
            "envelopes": rt.kv.stats.raft_batches, "commit": d.node.commit_index}  # fmt: skip


async def kv_load(node, requests: int, seconds: float,  # type: ignore[no-untyped-def]
                  pids: tuple[int, ...] = ()) -> dict[str, float]:  # fmt: skip
    """The same load as ``http_load``, through ``node.kv.put`` on the leader itself. A put that
    fails (e.g. a leadership change) is counted in ``errors``, not as a commit. With ``pids``
    (the followers' processes), the throughput window's CPU time per commit of this process
    (the leader and the load) and of each follower is measured too, with the leader's Readies,
    fsyncs and RAFT envelopes per commit."""
    from moltmesh.raft.driver import OutcomeUnknown, Unavailable

    kv = node.kv
    lat: list[float] = []
    errors = 0
    for i in range(requests):
        t0 = time.perf_counter()
        try:
            await kv.put(f"k{i % 1000}", VALUE)
        except (Unavailable, OutcomeUnknown):
            errors += 1
            continue
        lat.append(time.perf_counter() - t0)
    done = 0
    end = time.perf_counter() + seconds

    async def worker(w: int) -> None:
        nonlocal done, errors
        i = w
        while time.perf_counter() < end:
            try:
                await kv.put(f"k{i % 1000}", VALUE)
                done += 1
            except (Unavailable, OutcomeUnknown):
                errors += 1
            i += INFLIGHT

    procs = (os.getpid(), *pids)
    cpu0 = [cpu_seconds(p) for p in procs]
    n0 = raft_counters(node)
    t0 = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(INFLIGHT)))
    elapsed = time.perf_counter() - t0
    out = {"p50_ms": pct(lat, 0.5) * 1e3, "p99_ms": pct(lat, 0.99) * 1e3,
           "ops_s": done / elapsed, "errors": errors}  # fmt: skip
    if pids:
        n1 = raft_counters(node)
        commits = max(1, done)  # acknowledged puts (several may share one log entry)
        cpu = [(cpu_seconds(p) - c) / commits * 1e6 for p, c in zip(procs, cpu0, strict=True)]
        out["cpu_us"] = cpu  # type: ignore[assignment]
        for k in ("readies", "fsyncs", "envelopes", "commit"):
            out[f"{k}_per_commit"] = (n1[k] - n0[k]) / commits
    return out


def fsync_probe(n: int = 300) -> dict[str, float]:
    """This disk's floor: ``fdatasync`` after a 150-byte append (what the log does per Ready),
    in a temporary directory on the same file system as the nodes' data directories."""
    with tempfile.TemporaryDirectory() as tmp:
        fd = os.open(Path(tmp) / "probe", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        ts = []
        try:
            for _ in range(n):
                os.write(fd, b"x" * 150)
                t0 = time.perf_counter()
                os.fdatasync(fd)
                ts.append(time.perf_counter() - t0)
        finally:
            os.close(fd)
    return {"p50_ms": pct(ts, 0.5) * 1e3, "p99_ms": pct(ts, 0.99) * 1e3}


def moltmesh_inprocess_load(
    fsync: bool, requests: int, seconds: float, load: Load | None = None
) -> dict[str, float]:
    """The in-process rows: the ``mesh init`` node in this process leads, two ``moltmesh node``
    processes follow; ``load`` (default ``kv_load``) drives it."""
    load = load or kv_load
    env = {"MOLTMESH_MESH_SWIM": "lan", "MOLTMESH_RAFT_TIMING": "lan",
           "MOLTMESH_RAFT_FSYNC": "true" if fsync else "false"}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        dirs = [Path(tmp) / f"n{i}" for i in range(3)]
        run_cli("mesh", "init", "--data-dir", str(dirs[0]))
        lead = stack.enter_context(InProcessLeader(dirs[0], env))
        pids = tuple(f.proc.pid for f in join_two(dirs, stack, env))
        wait_for(lambda: len(lead.raft_status().get("voters", [])) == 3, "3 voters")
        wait_for(lambda: lead.raft_status().get("is_leader"), "the in-process node leads")
        return lead.run(lambda n: load(n, requests, seconds, pids))


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
    from pysyncobj import SyncObjException

    lat = []
    failed = 0
    for i in range(requests):
        t0 = time.perf_counter()
        try:
            kv.set(f"k{i % 1000}", VALUE, sync=True, timeout=5)
        except SyncObjException:  # e.g. a leadership change under load: counted, not timed
            failed += 1
            continue
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
                      "ops_s": done[0] / elapsed, "errors": failed}), flush=True)  # fmt: skip


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


PSO_ATTEMPTS = 3
"""A PySyncObj group where no node led when the load was to start reports nothing (its
leader changed while the nodes settled): started again, this many times at most."""


def pysyncobj_load(requests: int, seconds: float) -> dict[str, float]:
    for attempt in range(1, PSO_ATTEMPTS + 1):
        got = pysyncobj_attempt(requests, seconds)
        if got is not None:
            return {**got, "attempts": attempt}
        print(f"PySyncObj attempt {attempt}: no node led the load; again", flush=True)
    raise RuntimeError(f"no PySyncObj node reported figures in {PSO_ATTEMPTS} attempts")


def pysyncobj_attempt(requests: int, seconds: float) -> dict[str, float] | None:
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
                return json.loads(line)  # type: ignore[no-any-return]
    return None


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


PROFILE_NOTE = (
    "Where the CPU of a commit goes (not recomputed by this command: `python "
    "bench/raft_profile.py`, py-spy `--gil` samples of the in-process leader and one follower "
    "under this load, fsync on, 2026-11-26 05:33 UTC, 15.2k commits/s under the profiler, 37 "
    "µs leader and 20 µs per follower per commit, 64 puts per log entry). Leader: put path "
    "(encode the command, propose, future, result; with the load's own loop) 35 %, message "
    "encoding and TLS writes 18 %, apply (KV update, answer) 9 %, receiving acknowledgements "
    "7 %, log records and fsync 4 %, KV snapshot thread 1 %, KV watches 1 %, the rest (event "
    "loop, timers, Ready bookkeeping, garbage collection) 26 %. Follower: apply (decode, KV "
    "update) 24 %, receiving appends (TLS read, decode, step) 18 %, acknowledgements 18 %, log "
    "records and fsync 9 %, KV snapshot thread 5 %, KV watches 3 %, the rest 24 %. The per-put "
    "work was cut at 05:00-05:30 UTC (KV history kept column-wise, no event object per change; "
    "a follower applies without building results; Put and Batch commands packed and unpacked "
    "directly, the codec's bytes; the proposal's future awaited without an extra coroutine; "
    "deadlines in a FIFO; a batch's puts applied in one loop): against the commit before, "
    "interleaved in one session (9 rounds, fsync on, load 1.0-2.1), the leader's CPU per commit "
    "went 44 → 36 µs and a follower's 25 → 20 µs (medians; the rounds' ratios 0.76× and 0.72×, "
    "noisy on this shared machine), throughput 14.2k → 16.5k commits/s, and the instructions "
    "per put (valgrind, so without that noise) 71k → 50k on a single-voter leader's put path "
    "and 35k → 18k for a follower's apply. A higher gen-0 threshold (20,000) "
    "in the leader process changed nothing measurable (3 interleaved rounds; under 1 % of the "
    "instructions per put): the node already freezes its long-lived objects (`gc.freeze`) at "
    "start-up and every 10,000 commands. Before that (03:54 UTC, 12.4k commits/s under the "
    "profiler): 49 µs leader and 28 µs per follower, the follower's apply 31 %. Before the puts "
    "proposed together shared one entry (00:45 UTC, one entry per put): 59 µs leader and 34 µs "
    "per follower. Earlier still (5.4k commits/s): 116 µs leader and 70 µs per follower per "
    "commit, and the leader's loop stalled 270 ms in a KV snapshot and 130 ms in a full garbage "
    "collection, enough for the followers to elect another leader mid-window."
)


ON = "moltmesh in-process (`node.kv`), fsync on"
OFF = "moltmesh in-process (`node.kv`), fsync off"
HTTP_ON = "moltmesh HTTP (client process), fsync on"
HTTP_OFF = "moltmesh HTTP (client process), fsync off"
PSO = "PySyncObj 0.3 in-process (no fsync)"
COMPARED = (ON, OFF, PSO)
"""Run once per round, in a rotating order: the rows the throughput target compares."""


def median_row(runs: list[dict]) -> dict:  # type: ignore[type-arg]
    """One row from its rounds: the median of each figure (per process for CPU times)."""
    out: dict = {}  # type: ignore[type-arg]
    for k, v in runs[0].items():
        if isinstance(v, list):
            out[k] = [statistics.median(r[k][i] for r in runs) for i in range(len(v))]
        else:
            out[k] = statistics.median(r[k] for r in runs)
    out["errors"] = sum(r.get("errors", 0) for r in runs)
    return out


def round_ratios(rounds: list[dict[str, dict]], name: str, key: str) -> list[float]:  # type: ignore[type-arg]
    """``name``'s ``key`` over PySyncObj's, per round (the same minutes of this machine)."""
    return [r[name][key] / r[PSO][key] for r in rounds]


def reading(rows: list[tuple[str, dict[str, float]]], rounds: list[dict[str, dict]],  # type: ignore[type-arg]
            disk: dict[str, float], disk_after: dict[str, float], kills: list[float],
            load_before: float, load_after: float) -> str:  # fmt: skip
    """The targets of issue 8 read against this run's figures (computed, so a rerun keeps the
    reading true to its own numbers). Throughput and p50 are compared round by round."""
    by = dict(rows)
    fs_on, fs_off = by[ON], by[OFF]
    parts = [f"Reading (computed from this run; load average {load_before:.1f} → "
             f"{load_after:.1f} on 2 cores, shared with other sessions)."]  # fmt: skip
    if kills:
        med = statistics.median(kills) * 1e3
        parts.append(f"Failover median ≤ 500 ms: **{'met' if med <= 500 else 'missed'}** "
                     f"({med:.0f} ms).")  # fmt: skip
    p50, off = fs_on["p50_ms"], fs_off["p50_ms"]
    why = ""
    if p50 > 2:
        why = (
            f" — fsync on adds {p50 - off:.2f} ms to the p50 of fsync off ({off:.2f} ms): one "
            "follower's fsync lies on each commit's path (the leader's own overlaps it); an "
            f"isolated `fdatasync` on this disk measured {disk['p50_ms']:.2f} ms p50 before "
            f"the runs and {disk_after['p50_ms']:.2f} ms after (this VM disk's fsync time "
            "changes from run to run). With fsync off the p50 is CPU: 3 Python processes "
            "(TLS, msgpack, asyncio) on 2 shared cores"
        )
    parts.append(f"Commit p50 ≤ 2 ms with fsync: **{'met' if p50 <= 2 else 'missed'}** "
                 f"({p50:.2f} ms){why}.")  # fmt: skip
    for name, label in ((ON, "with fsync on"), (OFF, "with fsync off (like for like)")):
        ratio = statistics.median(round_ratios(rounds, name, "ops_s"))
        p50_ratio = statistics.median(round_ratios(rounds, name, "p50_ms"))
        met = ratio >= 1 and p50_ratio < 1
        parts.append(f"Throughput ≥ 1× PySyncObj at lower p50, {label}: "
                     f"**{'met' if met else 'missed'}** (median of the rounds' ratios "
                     f"{ratio:.2f}×, p50 {p50_ratio:.2f}× its p50).")  # fmt: skip
    parts.append("PySyncObj neither fsyncs nor encrypts.")
    return " ".join(parts)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "pso-node":
        port, partners, requests, seconds = sys.argv[2:6]
        pso_worker(int(port), [int(p) for p in partners.split(",")], int(requests),
                   float(seconds))  # fmt: skip
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=400, help="sequential commits (latency)")
    ap.add_argument("--seconds", type=float, default=5.0, help="throughput window, 64 in flight")
    ap.add_argument("--rounds", type=int, default=3,
                    help="rounds of the compared rows (in-process fsync on/off, PySyncObj), "
                         "in a rotating order; the HTTP rows run once")  # fmt: skip
    ap.add_argument("--trials", type=int, default=50, help="leader kill trials")
    ap.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md")
    args = ap.parse_args()
    load_before = os.getloadavg()[0]
    disk = fsync_probe()
    print(f"disk fdatasync: {disk}", flush=True)
    loads = {
        ON: lambda: moltmesh_inprocess_load(True, args.requests, args.seconds),
        OFF: lambda: moltmesh_inprocess_load(False, args.requests, args.seconds),
        HTTP_ON: lambda: moltmesh_load(True, args.requests, args.seconds),
        HTTP_OFF: lambda: moltmesh_load(False, args.requests, args.seconds),
        PSO: lambda: pysyncobj_load(args.requests, args.seconds),
    }
    rounds: list[dict[str, dict]] = []  # type: ignore[type-arg]
    for i in range(args.rounds):
        order = COMPARED[i % 3 :] + COMPARED[: i % 3]
        rounds.append({})
        for name in order:
            rounds[-1][name] = r = loads[name]()
            print(f"round {i + 1}/{args.rounds} {name}: {r}", flush=True)
    once = {name: loads[name]() for name in (HTTP_ON, HTTP_OFF)}
    for name, r in once.items():
        print(f"{name}: {r}", flush=True)
    rows = [(name, median_row([r[name] for r in rounds])) for name in (ON, OFF)]
    rows += [*once.items(), (PSO, median_row([r[PSO] for r in rounds]))]
    disk_after = fsync_probe()
    load_after = os.getloadavg()[0]
    kills = failover_trials(args.trials) if args.trials else []
    lines = ["| system | commit p50 (1 in flight) | p99 | throughput (64 in flight) |",
             "|---|---|---|---|"]  # fmt: skip
    for name, r in rows:
        lines.append(f"| {name} | {r['p50_ms']:.2f} ms | {r['p99_ms']:.2f} ms | "
                     f"{r['ops_s']:.0f} commits/s |")  # fmt: skip
    body = "\n".join(lines)
    body += (f"\n\nIn-process rows and PySyncObj: median over {args.rounds} rounds, each "
             "running the three in a rotating order (this machine is shared: its speed "
             "drifts between minutes); per round, throughput "
             + ", ".join(f"{r[ON]['ops_s']:.0f} / {r[OFF]['ops_s']:.0f} / "
                         f"{r[PSO]['ops_s']:.0f}" for r in rounds)
             + " commits/s (fsync on / fsync off / PySyncObj). HTTP rows: one run.")  # fmt: skip
    for name, r in rows:
        if r.get("errors"):
            body += f"\n\n{name}: {r['errors']} puts failed (not counted as commits)."
    restarts = sum(r[PSO].get("attempts", 1) - 1 for r in rounds)
    if restarts:
        body += (f"\n\nPySyncObj was started again {restarts} time(s): no node led when its "
                 "load was to start (its leader changed while the nodes settled).")  # fmt: skip
    cost = [(name, r) for name, r in rows if "cpu_us" in r]
    if cost:
        body += "\n\nCPU per commit in the throughput window (process CPU time over commits):"
        for name, r in cost:
            lead_us, *fol = r["cpu_us"]  # type: ignore[misc]
            body += (f" {name}: leader process (with the load) {lead_us:.0f} µs, followers "
                     f"{' and '.join(f'{f:.0f}' for f in fol)} µs; per commit the leader took "
                     f"{r['readies_per_commit']:.3f} Readies, {r['fsyncs_per_commit']:.3f} "
                     f"fsyncs and sent {r['envelopes_per_commit']:.3f} RAFT envelopes (≈ "
                     f"{1 / max(r['envelopes_per_commit'], 1e-9) * 2:.0f} commits per append "
                     "to each of its 2 followers), in "
                     f"{1 / max(r['commit_per_commit'], 1e-9):.1f} commits per log entry "
                     "(a batch entry holds the puts proposed together).")  # fmt: skip
        body += "\n\n" + PROFILE_NOTE
    body += "\n\n" + " ".join(
        f"{name}: {statistics.median(round_ratios(rounds, name, 'ops_s')):.2f}× PySyncObj's "
        f"throughput, p50 {statistics.median(round_ratios(rounds, name, 'p50_ms')):.2f}× its "
        "p50 (medians of the rounds' ratios)." for name in (ON, OFF))  # fmt: skip
    pso = rows[-1][1]
    body += " " + " ".join(
        f"{name}: {once[name]['ops_s'] / pso['ops_s']:.2f}× PySyncObj's throughput, p50 "
        f"{once[name]['p50_ms'] / pso['p50_ms']:.2f}× its p50." for name in once)  # fmt: skip
    body += (f"\n\n{args.requests} sequential commits for latency; {args.seconds:.0f} s with "
             f"{INFLIGHT} in flight for throughput; 100-byte values. In-process rows: the load "
             "calls `node.kv.put` on the leader, run through the embedding API in the bench "
             "process (like PySyncObj's load); HTTP rows: `PUT /v1/kv/{key}` from a separate "
             "client process (see the module docstring). This disk's floor, measured in the "
             f"same run: `fdatasync` of a 150-byte append p50 {disk['p50_ms']:.2f} ms, p99 "
             f"{disk['p99_ms']:.2f} ms before the runs, p50 {disk_after['p50_ms']:.2f} ms after; "
             "with fsync on, one follower fsync lies on every commit's path (the leader's own "
             "runs in parallel with it). Load average (1 min) "
             f"{load_before:.1f} before, {load_after:.1f} after, on 2 cores.")  # fmt: skip
    if kills:
        body += (f"\n\nLeader `kill -9` → next commit acknowledged through a follower "
                 f"({len(kills)} trials, LAN timers 150–300 ms): median "
                 f"{statistics.median(kills) * 1e3:.0f} ms, p90 {pct(kills, 0.9) * 1e3:.0f} ms, "
                 f"max {max(kills) * 1e3:.0f} ms.")  # fmt: skip
    body += "\n\n" + reading(rows, rounds, disk, disk_after, kills, load_before, load_after)
    print(body)
    if not args.no_write:
        cmd = "python bench/raft_mesh.py " + " ".join(sys.argv[1:])
        write_section("raft_mesh", "Raft over the mesh (3 processes)", cmd.strip(), body)


if __name__ == "__main__":
    main()
