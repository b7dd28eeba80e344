"""Serving benchmark (issue 2): what the node's HTTP hot path costs on top of the model.

In ONE run, side by side, on loopback only:

- ``session.run`` of the served model in-process at batch 1 (the floor), and ``Runtime.run``
  (the node's wrapper: input validation + run);
- a bare aiohttp hello-world (``GET /hello``) served by a second AppRunner/TCPSite on the SAME
  event loop as the node, in the node's server process, and beside it ``POST /echo``, which
  reads the binary infer request's body (same headers and bytes) and answers 40 bytes: what
  aiohttp alone costs for a request of that shape (the POST floor; lean client only);
- the node's ``POST /v2/models/defects/infer`` with binary tensors and with JSON tensors;
- 1 and 32 concurrent clients, each a keep-alive connection, driven by two load generators in
  this process: ``lean`` (``bench.serve_load.LeanConnection``: prebuilt request bytes, reads the
  status line, headers and a Content-Length body; a fixed cost per request whatever the
  endpoint, as wrk's) and ``aiohttp`` (``aiohttp.ClientSession``, whose per-request cost is
  higher and larger for a POST than for a GET, so it counts against the server). The targets
  are judged with the lean client; the aiohttp rows are kept for comparison;
- server event loop asyncio and uvloop, each in its own server subprocess with the node's default
  config, plus (unless ``--no-what-if``) a uvloop server with ``runtime.intra_op_threads = 0``,
  to show what onnxruntime's intra-op thread pool costs a model this small, and one with
  ``runtime.inline_threshold_ms = 100``, whose batches run on the loop instead of the worker
  pool (what the hop to a worker costs when both share one core). All servers start up
  front and the cells are interleaved over ``--rounds`` rounds, so that drift on this shared
  machine hits all alike. The client and the servers are pinned to different CPUs when there
  are two or more.

Reported per cell: p50/p99 latency (all rounds pooled), req/s (median of the rounds), and the
CPU time the server process and this client process spent per request. Then the targets (binary
tensors, node defaults): overhead = p50(infer) − p50(hello) − p50(session.run) ≤ 150 µs at 1
client; req/s(infer) ≥ 0.35 × req/s(hello) at 32 clients; and the in-process cost of the v2 codec
for a 32×32 image as JSON vs binary, to say how much of JSON's extra latency is encoding.

Bounded: every cell stops after its request count or ``--max-seconds``, whichever comes first.
Run from the repository root::

    .venv/bin/python -m bench.serve            # writes the "serve" section of docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import psutil

from bench.report import write_section
from bench.serve_load import (
    LoadError,
    Request,
    fetch_once,
    infer_bodies,
    run_lean_load,
    run_load,
    sample_image,
    time_call,
)
from bench.serve_profile import breakdown, profile_server
from bench.serve_report import (
    CLIENTS,
    ECHO,
    ENDPOINTS,
    FLOOR,
    Cell,
    floor_label,
    paced_label,
    print_tables,
    summarise,
)
from bench.serve_server import bundled_model_present
from moltmesh import v2
from moltmesh.client import decode_answer
from moltmesh.config import RuntimeConfig

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0
WARMUP_MAX_S = 1.0
INLINE_WHAT_IF_MS = 100.0  # every batch of the bench's model runs on the loop below this


@dataclass(frozen=True)
class ServerSpec:
    """One server subprocess: its label in the tables, its loop, and its config override."""

    label: str
    loop: str
    intra_op_threads: int | None = None  # None: the node's default
    inline_threshold_ms: float | None = None  # None: the node's default
    judged: bool = True  # the targets are judged on node defaults only
    root: Path | None = None  # another checkout to serve from (--baseline); None: this one


@dataclass
class Server:
    spec: ServerSpec
    proc: asyncio.subprocess.Process
    ready: dict[str, Any]
    ps: psutil.Process

    def cpu_s(self) -> float:
        t = self.ps.cpu_times()
        return t.user + t.system


@asynccontextmanager
async def server_process(
    spec: ServerSpec, cpu: int | None, fallback: bool
) -> AsyncIterator[Server]:
    """Start ``bench.serve_server`` for ``spec``; stop it (SIGTERM, then kill) on exit."""
    cmd = [sys.executable, "-m", "bench.serve_server", "--loop", spec.loop]
    if cpu is not None:
        cmd += ["--cpu", str(cpu)]
    if fallback:
        cmd.append("--fallback-model")
    if spec.intra_op_threads is not None:
        cmd += ["--intra-op-threads", str(spec.intra_op_threads)]
    if spec.inline_threshold_ms is not None:
        cmd += ["--inline-threshold-ms", str(spec.inline_threshold_ms)]
    root = spec.root or ROOT
    env = {**os.environ, "PYTHONPATH": str(root), "PYTHONUNBUFFERED": "1"}
    proc = await asyncio.create_subprocess_exec(
        *cmd, cwd=root, env=env, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), START_TIMEOUT_S)
        if not line:
            code = await proc.wait()
            raise RuntimeError(f"server {spec.label!r} exited with {code} before serving")
        yield Server(spec, proc, json.loads(line), psutil.Process(proc.pid))
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                proc.kill()
                await proc.wait()


def check_answers(binary: tuple[int, dict, bytes], as_json: tuple[int, dict, bytes]) -> str:
    """Both answers are 200, [1,4] probabilities summing to 1, and agree; returns the variant."""
    answers = []
    for status, headers, body in (binary, as_json):
        if status != 200:
            raise LoadError(f"infer answered HTTP {status}: {body[:200]!r}")
        answer = decode_answer(body, headers.get(v2.HEADER_LENGTH))
        probs = answer.outputs["probabilities"]
        if probs.shape != (1, 4) or not np.isclose(probs.sum(), 1.0, atol=1e-4):
            raise LoadError(f"unexpected probabilities {probs!r}")
        answers.append(answer)
    if v2.HEADER_LENGTH not in binary[1] or v2.HEADER_LENGTH in as_json[1]:
        raise LoadError("the binary request did not get a binary answer, or the JSON one did")
    np.testing.assert_allclose(
        answers[0].outputs["probabilities"], answers[1].outputs["probabilities"], atol=1e-6
    )
    return str(answers[0].parameters.get("variant", "?"))


def check_floor(node: tuple[int, dict, bytes], floor: tuple[int, dict, bytes]) -> None:
    """The model floor answers 200 with the node's probabilities (it runs the same model)."""
    status, headers, body = floor
    if status != 200:
        raise LoadError(f"the model floor answered HTTP {status}: {body[:200]!r}")
    mine = decode_answer(body, headers.get(v2.HEADER_LENGTH)).outputs["probabilities"]
    theirs = decode_answer(node[2], node[1].get(v2.HEADER_LENGTH)).outputs["probabilities"]
    np.testing.assert_allclose(mine, theirs, atol=1e-6)


def floor_timings(
    model_path: str, image: np.ndarray, count: int, intra_op_threads: int | None, idle_us: float
) -> dict[str, list[float]]:
    """``session.run`` with the node's session options, back to back and after ``idle_us`` of
    sleep each (see ``paced_label``), and the node's ``Runtime.run``."""
    import onnxruntime as ort

    from runtimes.onnx import OnnxOptions, OnnxRuntime

    cfg = RuntimeConfig()
    intra = cfg.intra_op_threads if intra_op_threads is None else intra_op_threads
    so = ort.SessionOptions()
    so.intra_op_num_threads = intra
    so.inter_op_num_threads = cfg.inter_op_threads
    session = ort.InferenceSession(model_path, sess_options=so, providers=["CPUExecutionProvider"])
    feed = {"image": image}
    options = OnnxOptions(intra, cfg.inter_op_threads, warmup_runs=cfg.warmup_runs)
    runtime = OnnxRuntime(model_path, name="defects", options=options)
    for _ in range(50):
        session.run(None, feed)
        runtime.run(feed)
    label = floor_label(intra_op_threads)
    out = {
        label: time_call(lambda: session.run(None, feed), count, 5.0),
        label.replace("session.run", "Runtime.run"): time_call(
            lambda: runtime.run(feed), count, 5.0
        ),
    }
    if intra_op_threads is None and idle_us > 0:
        run = lambda: session.run(None, feed)  # noqa: E731
        out[paced_label(idle_us)] = time_call(run, count, 5.0, idle_s=idle_us / 1e6)
    return out


def codec_timings(bodies: dict[str, Request], count: int) -> dict[str, float]:
    """p50 µs of the v2 codec in-process: parse the request, encode a [1,4] answer."""
    out: dict[str, float] = {}
    probs = {"probabilities": np.full((1, 4), 0.25, np.float32)}
    params = {"node": "n" * 16, "variant": "full", "route": "local"}
    for kind, req in bodies.items():
        assert req.body is not None
        hl = req.headers.get(v2.HEADER_LENGTH)
        length = int(hl) if hl is not None else None
        binary = {"probabilities": kind == "binary"}
        parse = time_call(lambda b=req.body, n=length: v2.parse_infer_request(b, n), count, 5.0)
        encode = time_call(
            lambda b=binary: v2.encode_infer_response("defects", "1", probs, b, None, params),
            count,
            5.0,
        )
        out[f"parse {kind}"] = float(np.median(parse)) * 1e6
        out[f"encode {kind}"] = float(np.median(encode)) * 1e6
        out[f"body bytes {kind}"] = float(len(req.body))
    image = sample_image()
    dumps = time_call(lambda: json.dumps(image.ravel().tolist()), count, 5.0)
    out["client json.dumps"] = float(np.median(dumps)) * 1e6
    return out


async def measure_cell(
    server: Server,
    req: Request,
    clients: int,
    requests: int,
    warmup: int,
    max_seconds: float,
    client: str,
    after_warmup: Callable[[], Awaitable[object]] | None = None,
) -> tuple[list[float], float, float, float]:
    """Warm up, then one bounded load run with the ``client`` load generator ("lean" or
    "aiohttp"); latencies, req/s, server and client CPU seconds. ``after_warmup`` (lean only)
    is awaited between the two."""
    warm_s = min(max_seconds, WARMUP_MAX_S)
    if client == "lean":
        await run_lean_load(req, clients, warmup, warm_s)
        if after_warmup is not None:
            await after_warmup()
        s0, c0 = server.cpu_s(), time.process_time()
        result = await run_lean_load(req, clients, requests, max_seconds)
        s1, c1 = server.cpu_s(), time.process_time()
        return result.latencies, result.rate, s1 - s0, c1 - c0
    connector = aiohttp.TCPConnector(limit=clients, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:
        await run_load(session, req, clients, warmup, warm_s)
        s0, c0 = server.cpu_s(), time.process_time()
        result = await run_load(session, req, clients, requests, max_seconds)
        s1, c1 = server.cpu_s(), time.process_time()
    return result.latencies, result.rate, s1 - s0, c1 - c0


async def take_run_times(url: str) -> list[float]:
    """The durations of the model's runs inside the server since the last call (seconds)."""
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        r.raise_for_status()
        return list((await r.json())["seconds"])


async def profile_breakdown(
    server: Server, reqs: dict[str, Request], seconds: float, clients: int = 1
) -> dict:
    """hello and infer binary, ``clients`` lean clients, each under py-spy for ``seconds``: per
    endpoint the share of samples per component, the server CPU µs per request and the request
    count."""
    out: dict[str, Any] = {"server": server.spec.label, "clients": clients}
    for endpoint in ("hello", "binary"):
        result: list[Any] = []

        async def load(req: Request = reqs[endpoint], result: list[Any] = result) -> None:
            await run_lean_load(req, clients, 20 * clients, seconds)  # warm (connections, batcher)
            s0 = server.cpu_s()
            got = await run_lean_load(req, clients, 10**9, seconds)
            result += [got.count, (server.cpu_s() - s0) / max(1, got.count) * 1e6]

        raw = await profile_server(server.proc.pid, seconds, load)
        out[endpoint] = {"shares": breakdown(raw), "count": result[0], "cpu_us": result[1]}
    return out


def endpoints_of(reqs: dict[str, Request], client: str, clients: int) -> list[str]:
    """The cells of one server, client and client count: the node's endpoints always; the
    POST floor with the judged client; the model floor with the judged client at 32 clients
    (where its ratio is judged against)."""
    out = list(ENDPOINTS)
    if client == "lean" and ECHO in reqs:
        out.append(ECHO)
    if client == "lean" and clients == 32 and FLOOR in reqs:
        out.append(FLOOR)
    return out


def server_specs(args: argparse.Namespace) -> list[ServerSpec]:
    specs = [ServerSpec(loop, loop) for loop in args.loops]
    if not args.no_what_if:
        loop = "uvloop" if "uvloop" in args.loops else args.loops[-1]
        specs.append(ServerSpec(f"{loop}, intra 0", loop, intra_op_threads=0, judged=False))
        inline = ServerSpec(f"{loop}, inline batches", loop, judged=False)
        specs.append(replace(inline, inline_threshold_ms=INLINE_WHAT_IF_MS))
    if args.baseline is not None:
        specs += [ServerSpec(f"{loop}, {args.baseline_name}", loop, judged=False,
                             root=args.baseline) for loop in args.loops]  # fmt: skip
    return specs


async def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    pin = not args.no_pin and hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2
    client_cpu, server_cpu = (0, 1) if pin else (None, None)
    if client_cpu is not None:
        os.sched_setaffinity(0, {client_cpu})
    fallback = args.fallback_model or not bundled_model_present()
    image = sample_image(args.seed)
    specs = server_specs(args)
    cells: dict[tuple[str, str, str, int], Cell] = {}
    floor: dict[str, list[list[float]]] = {}  # per round
    server_runs: dict[str, list[list[float]]] = {}  # per server label, per round
    info: dict[str, Any] = {"fallback": fallback, "pinned": pin, "servers": {}}
    info["load_before"] = os.getloadavg()[0]
    requests_for = {1: args.requests_1, 32: args.requests_32}
    async with AsyncExitStack() as stack:
        servers = [
            await stack.enter_async_context(server_process(spec, server_cpu, fallback))
            for spec in specs
        ]
        for server in servers:
            reqs = infer_bodies(image, server.ready["token"], server.ready["infer_url"])
            async with aiohttp.ClientSession() as s:
                binary = await fetch_once(s, reqs["binary"])
                variant = check_answers(binary, await fetch_once(s, reqs["json"]))
                if "floor_url" in server.ready:
                    b = reqs["binary"]
                    minimal = Request("POST", server.ready["floor_url"], b.headers, b.body)
                    check_floor(binary, await fetch_once(s, minimal))
            info["servers"][server.spec.label] = {**server.ready, "variant": variant}
        info["codec"] = codec_timings(
            infer_bodies(image, "token", servers[0].ready["infer_url"]), args.codec_count
        )
        model_path = servers[0].ready["model_path"]
        blob = Path(model_path).read_bytes()
        info["model_file"] = (
            f"{len(blob) / 1024:.0f} KiB, sha256 {hashlib.sha256(blob).hexdigest()[:12]}"
        )
        for rnd in range(args.rounds):
            for intra in sorted(
                {s.intra_op_threads for s in specs}, key=lambda i: (i is not None, i)
            ):
                got = floor_timings(model_path, image, args.floor_count, intra, args.idle_us)
                for name, values in got.items():
                    floor.setdefault(name, []).append(values)
            for server in servers:
                reqs = infer_bodies(image, server.ready["token"], server.ready["infer_url"])
                reqs["hello"] = Request("GET", server.ready["hello_url"], {})
                b = reqs["binary"]
                if "echo_url" in server.ready:  # not in a --baseline checkout older than it
                    reqs[ECHO] = Request("POST", server.ready["echo_url"], b.headers, b.body)
                if "floor_url" in server.ready:
                    reqs[FLOOR] = Request("POST", server.ready["floor_url"], b.headers, b.body)
                for client in args.clients:
                    for clients in (1, 32):
                        for endpoint in endpoints_of(reqs, client, clients):
                            times_url = server.ready.get("run_times_url")
                            timed = (times_url is not None and client == "lean"
                                     and clients == 1 and endpoint == "binary")  # fmt: skip
                            clear = (lambda u=times_url: take_run_times(u)) if timed else None
                            lat, rate, scpu, ccpu = await measure_cell(
                                server, reqs[endpoint], clients, requests_for[clients],
                                args.warmup, args.max_seconds, client, clear,
                            )  # fmt: skip
                            if timed:
                                runs = await take_run_times(times_url)
                                server_runs.setdefault(server.spec.label, []).append(runs)
                            key = (server.spec.label, client, endpoint, clients)
                            cells.setdefault(key, Cell()).add(lat, rate, scpu, ccpu)
                            print(f"round {rnd + 1}/{args.rounds} {server.spec.label:15} "
                                  f"{client:7} {endpoint:6} {clients:2} clients: {len(lat):5} "
                                  f"requests, {rate:7,.0f} req/s",
                                  file=sys.stderr, flush=True)  # fmt: skip
        if args.profile > 0:
            server = next((x for x in servers if x.spec.judged and x.spec.loop == "uvloop"),
                          servers[0])  # fmt: skip
            reqs = infer_bodies(image, server.ready["token"], server.ready["infer_url"])
            reqs["hello"] = Request("GET", server.ready["hello_url"], {})
            try:
                info["profile"] = [
                    await profile_breakdown(server, reqs, args.profile, clients)
                    for clients in args.profile_clients
                ]
            except RuntimeError as e:
                print(f"profile skipped: {e}", file=sys.stderr)
    info["load_after"] = os.getloadavg()[0]
    return {"cells": cells, "floor": floor, "server_runs": server_runs, "info": info,
            "specs": specs}  # fmt: skip


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--loops", default="asyncio,uvloop", help="server loops, comma-separated: asyncio, uvloop"
    )
    parser.add_argument(
        "--no-what-if",
        action="store_true",
        help="skip the extra servers with runtime.intra_op_threads = 0 (onnxruntime's own pool) "
        f"and with runtime.inline_threshold_ms = {INLINE_WHAT_IF_MS:g} (batches on the loop)",
    )
    parser.add_argument(
        "--clients",
        default=",".join(CLIENTS),
        help="load generators, comma-separated: lean (judged), aiohttp (for comparison)",
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests-1", type=int, default=800, help="per round, 1 client")
    parser.add_argument("--requests-32", type=int, default=2500, help="per round, 32 clients")
    parser.add_argument(
        "--warmup", type=int, default=100, help=f"warm-up requests per cell (≤ {WARMUP_MAX_S:g} s)"
    )
    parser.add_argument("--max-seconds", type=float, default=3.0, help="cap per cell and round")
    parser.add_argument("--floor-count", type=int, default=1000, help="session.run per round")
    parser.add_argument(
        "--idle-us", type=float, default=150.0,
        help="also time session.run with the thread asleep this long before each call (as a "
        "1-client server's loop sleeps between requests); 0 skips it",
    )  # fmt: skip
    parser.add_argument("--codec-count", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0, help="seed of the input image")
    parser.add_argument(
        "--profile",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="py-spy the uvloop server this long per endpoint (hello, infer binary; 1 lean "
        "client) for the per-component CPU breakdown; 0 skips it",
    )
    parser.add_argument(
        "--profile-clients",
        default="1,32",
        help="concurrent lean clients of the py-spy breakdown, comma-separated (one table each)",
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin client and servers")
    parser.add_argument(
        "--baseline",
        type=Path,
        metavar="DIR",
        help="also serve from this other checkout (e.g. `git archive COMMIT | tar -x -C DIR`), "
        "one server per loop, for before/after figures in one run",
    )
    parser.add_argument(
        "--baseline-name",
        default="baseline",
        help="label of the --baseline servers, e.g. 'before deb3e57'",
    )
    parser.add_argument(
        "--fallback-model",
        action="store_true",
        help="use the stand-in conv model even if the bundled one exists",
    )
    parser.add_argument("--no-write", action="store_true", help="do not touch docs/benchmarks.md")
    args = parser.parse_args(argv)
    args.loops = [x.strip() for x in args.loops.split(",") if x.strip()]
    args.clients = [x.strip() for x in args.clients.split(",") if x.strip()]
    try:
        args.profile_clients = [int(x) for x in args.profile_clients.split(",") if x.strip()]
    except ValueError:
        parser.error("--profile-clients takes positive integers, comma-separated")
    if not args.profile_clients or min(args.profile_clients) < 1:
        parser.error("--profile-clients takes positive integers, comma-separated")
    if "lean" not in args.clients or not set(args.clients) <= set(CLIENTS):
        parser.error(f"--clients takes lean (always) and optionally aiohttp, from {CLIENTS}")
    if (
        not args.loops
        or not set(args.loops) <= {"asyncio", "uvloop"}
        or len(set(args.loops)) < len(args.loops)
    ):
        parser.error("--loops takes asyncio and/or uvloop, each once")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    try:
        import uvloop
    except ImportError:
        res = asyncio.run(run_bench(args))
        args.client_loop = "the asyncio loop"
    else:
        res = uvloop.run(run_bench(args))
        args.client_loop = "uvloop"
    rows, body = summarise(res, args)
    print_tables(rows, body)
    print(f"wall time {time.perf_counter() - started:.0f} s", file=sys.stderr)
    if not args.no_write:
        command = " ".join(
            [".venv/bin/python -m bench.serve", *(sys.argv[1:] if argv is None else argv)]
        )
        write_section("serve", "Serving: HTTP hot path vs hello-world and session.run",
                      command, body)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
