"""The server side of ``bench/serve.py``: a real ``moltmesh.Node`` plus a bare hello-world route.

Run as a subprocess by the benchmark (``python -m bench.serve_server --loop uvloop ...``), so the
server has its own interpreter and, when ``--cpu`` is given, its own core. Contract:

- It starts a ``Node`` (HTTP API on 127.0.0.1, port chosen by the OS, node defaults otherwise) and,
  on the **same event loop**, a second ``AppRunner``/``TCPSite`` serving ``GET /hello``, which
  returns a 12-byte text body and does nothing else, and ``POST /echo``, which reads the body
  and answers its first 40 bytes as ``application/octet-stream`` (aiohttp's own cost of a
  request shaped like a binary infer: the POST floor).
- A ``bench.serve_floor.ModelFloor`` of the same model file, with the node's session thread
  counts and ``max_batch``, on aiohttp's low-level server on the same loop (``floor_url``).
- ``GET /run-times`` (same site) answers ``{"seconds": [...]}``: how long each run of the
  model took inside the node (``Runtime.run`` as the node calls it, timed in place) since the
  previous call, which it clears. Two clock reads per run; nothing else changes.
- When both listen it prints ONE JSON line on stdout: ``infer_url``, ``hello_url``, ``echo_url``,
  ``run_times_url``, ``floor_url``, ``token``, ``loop`` (the running loop's class),
  ``model_path`` (the .onnx file the node serves for the model), ``variant``, ``inline``
  (whether the node runs it on the loop) and ``pid``.
- It stops cleanly on SIGTERM or SIGINT (hello site first, then the node) and exits 0.

``fallback_repository`` builds a small conv model with the bundled model's I/O (``image`` FP32
[N,1,32,32] -> ``probabilities`` FP32 [N,4]) for when the bundled ``defects`` model is absent.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.serve_floor import ModelFloor
from moltmesh.config import NodeConfig, RuntimeConfig
from moltmesh.logs import setup_logging

MODEL = "defects"
HELLO_BODY = "Hello, world"


def bundled_model_present() -> bool:
    """True when the bundled ``defects`` model has been committed (any version, full variant)."""
    from moltmesh.node import BUNDLED_MODELS

    return any((BUNDLED_MODELS / MODEL).glob("*/model.onnx"))


def fallback_repository(root: Path) -> Path:
    """Write ``<root>/defects/1/model.onnx``: two conv stages, global max pool, linear, softmax.

    Deterministic weights (seed 7); the same I/O as the bundled model. Returns ``root``.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(7)

    def weight(name: str, *shape: int) -> onnx.TensorProto:
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
        w = (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)
        return numpy_helper.from_array(w, name)

    inits = [
        weight("W1", 16, 1, 3, 3),
        weight("W2", 32, 16, 3, 3),
        weight("W3", 64, 32, 3, 3),
        weight("Wfc", 64, 4),
        numpy_helper.from_array(np.zeros(4, np.float32), "bfc"),
    ]
    nodes = []
    prev = "image"
    for i, w in enumerate(("W1", "W2", "W3"), start=1):
        nodes += [
            helper.make_node("Conv", [prev, w], [f"c{i}"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", [f"c{i}"], [f"r{i}"]),
            helper.make_node("MaxPool", [f"r{i}"], [f"p{i}"], kernel_shape=[2, 2], strides=[2, 2]),
        ]
        prev = f"p{i}"
    nodes += [
        helper.make_node("GlobalMaxPool", [prev], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "Wfc", "bfc"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "defects_bench_fallback",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 32, 32])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 4])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = root / MODEL / "1" / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)
    return root


def floor_session(model_path: Path, config: RuntimeConfig) -> Any:
    """An onnxruntime session of ``model_path`` with the node's thread counts (for the floor)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = config.intra_op_threads
    so.inter_op_num_threads = config.inter_op_threads
    providers = ["CPUExecutionProvider"]
    return ort.InferenceSession(str(model_path), sess_options=so, providers=providers)


def time_runs(runtime: Any, sink: list[float]) -> None:
    """Make ``runtime.run`` append its duration (seconds) to ``sink`` on every call."""
    inner, clock = runtime.run, time.perf_counter

    def run(inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None) -> Any:
        t0 = clock()
        try:
            return inner(inputs, outputs)
        finally:
            sink.append(clock() - t0)

    runtime.run = run


async def serve(
    data_dir: Path,
    repository: Path | None,
    intra_op_threads: int | None,
    inline_threshold_ms: float | None = None,
) -> None:
    """Run the node and the hello-world site on the running loop until SIGTERM/SIGINT.

    The node runs with ``NodeConfig`` defaults except the port (0), the log level and, when
    given, the model repository, ``runtime.intra_op_threads`` and
    ``runtime.inline_threshold_ms``.
    """
    from aiohttp import web

    from moltmesh.node import Node

    config = NodeConfig(data_dir=data_dir)
    config.api.port = 0
    config.log.level = "warning"
    if intra_op_threads is not None:
        config.runtime.intra_op_threads = intra_op_threads
    if inline_threshold_ms is not None:
        config.runtime.inline_threshold_ms = inline_threshold_ms
    if repository is not None:
        config.runtime.model_repository = [repository]
        config.runtime.bundled_models = False

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text=HELLO_BODY)

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        return web.Response(body=body[:40], content_type="application/octet-stream")

    run_times: list[float] = []

    async def take_run_times(request: web.Request) -> web.Response:
        taken = run_times[:]
        del run_times[:]
        return web.json_response({"seconds": taken})

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    app = web.Application()
    app.router.add_get("/hello", hello)
    app.router.add_post("/echo", echo)
    app.router.add_get("/run-times", take_run_times)
    runner = web.AppRunner(app, access_log=None)
    async with Node(config) as node:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runtime = node.service.runtime(MODEL)
        session = floor_session(runtime.path, config.runtime)  # type: ignore[attr-defined]
        floor = ModelFloor(session, config.runtime.max_batch)
        try:
            floor_url = await floor.start()
            host, port = runner.addresses[0][:2]
            time_runs(runtime, run_times)
            threshold_s = config.runtime.inline_threshold_ms / 1000
            ready = {
                "infer_url": f"{node.api_url}/v2/models/{MODEL}/infer",
                "hello_url": f"http://{host}:{port}/hello",
                "echo_url": f"http://{host}:{port}/echo",
                "run_times_url": f"http://{host}:{port}/run-times",
                "floor_url": floor_url,
                "token": node.api_token,
                "loop": f"{type(loop).__module__}.{type(loop).__name__}",
                "model_path": str(getattr(runtime, "path", "")),
                "variant": runtime.metadata.variant,
                "inline": runtime.typical_run_seconds < threshold_s,
                "intra_op_threads": config.runtime.intra_op_threads,
                "pid": os.getpid(),
            }
            print(json.dumps(ready), flush=True)
            await stop.wait()
        finally:
            await floor.stop()
            await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], required=True)
    parser.add_argument("--cpu", type=int, help="pin this process to one CPU (Linux)")
    parser.add_argument(
        "--fallback-model",
        action="store_true",
        help="serve the built-in conv model instead of the bundled one",
    )
    parser.add_argument(
        "--intra-op-threads",
        type=int,
        help="override runtime.intra_op_threads (default: the node's)",
    )
    parser.add_argument(
        "--inline-threshold-ms",
        type=float,
        help="override runtime.inline_threshold_ms (e.g. under valgrind, where the warm-up "
        "runs slowly and the model would otherwise go to the worker pool)",
    )
    args = parser.parse_args(argv)
    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    setup_logging("warning", "text")
    with tempfile.TemporaryDirectory(prefix="moltmesh-bench-") as tmp:
        repository = fallback_repository(Path(tmp) / "repo") if args.fallback_model else None
        coro = serve(
            Path(tmp) / "data", repository, args.intra_op_threads, args.inline_threshold_ms
        )
        if args.loop == "uvloop":
            import uvloop

            uvloop.run(coro)
        else:
            asyncio.run(coro)
    return 0


if __name__ == "__main__":
    sys.exit(main())
