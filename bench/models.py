"""Per-call latency of the bundled full and light defect models, side by side in one run.

Usage::

    .venv/bin/python -m bench.models [--calls 2000] [--threads 1]

Both models run with onnxruntime on the CPU with the same session options. Calls alternate
between the two models so that machine noise hits both alike. Reports, for batch 1 and batch 32,
the median and p99 latency per call, the per-image median, and the full/light ratio of medians;
then the expected cost of the cascade at its recorded escalation rate. Writes the section
``models`` of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from bench.report import percentile, write_section
from moltmesh.bundled import defects

MODELS = Path(__file__).resolve().parent.parent / "moltmesh" / "bundled" / "models"
FULL, LIGHT = "defects", "defects-light"
BATCHES = (1, 32)
WARMUP = 100


def session(name: str, threads: int) -> ort.InferenceSession:
    """An onnxruntime CPU session of the bundled model ``name``."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    path = MODELS / name / "1" / "model.onnx"
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def measure(
    sessions: dict[str, ort.InferenceSession], images: np.ndarray, calls: int
) -> dict[str, list[float]]:
    """Latency samples in µs per model, calls alternating between the models."""
    feeds = {"image": images}
    for sess in sessions.values():
        for _ in range(WARMUP):
            sess.run(["probabilities"], feeds)
    samples: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(calls):
        for name, sess in sessions.items():
            start = time.perf_counter_ns()
            sess.run(["probabilities"], feeds)
            samples[name].append((time.perf_counter_ns() - start) / 1e3)
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000, help="timed calls per model and batch")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)

    metrics = json.loads((MODELS / "metrics.json").read_text(encoding="utf-8"))
    sessions = {name: session(name, args.threads) for name in (FULL, LIGHT)}
    data = defects.generate(defects.TEST_SEED, max(BATCHES))
    rows = []
    medians: dict[tuple[int, str], float] = {}
    for batch in BATCHES:
        calls = args.calls if batch == 1 else max(args.calls // 4, 100)
        samples = measure(sessions, data.images[:batch], calls)
        for name in (FULL, LIGHT):
            p50, p99 = percentile(samples[name], 50), percentile(samples[name], 99)
            medians[batch, name] = p50
            rows.append(
                f"| {name} | {batch} | {calls} | {p50:.1f} | {p99:.1f} | {p50 / batch:.1f} | "
                f"{metrics['models'][name]['macs']:,} |"
            )
        ratio = medians[batch, FULL] / medians[batch, LIGHT]
        rows.append(f"| **full / light** | {batch} | | **{ratio:.2f}×** | | | |")

    esc = metrics["cascade"]["escalation_rate"] / 100
    light1, full1 = medians[1, LIGHT], medians[1, FULL]
    cascade1 = light1 + esc * full1
    body = (
        f"onnxruntime {ort.__version__}, CPU provider, intra-op threads {args.threads}; "
        "calls alternate between the models; latency of `session.run` in µs.\n\n"
        "| model | batch | calls | p50 µs | p99 µs | p50 µs / image | MACs / image |\n"
        "|---|---:|---:|---:|---:|---:|---:|\n" + "\n".join(rows) + "\n\n"
        f"Cascade at batch 1 (light always, full for the {100 * esc:.2f} % escalated): expected "
        f"{cascade1:.1f} µs per patch = {cascade1 / full1:.2f}× the full model alone, for "
        f"{metrics['cascade']['accuracy']:.2f} % accuracy against the full model's "
        f"{metrics['models'][FULL]['accuracy']:.2f} %.\n"
    )
    print(body)
    if not args.no_write:
        command = "python -m bench.models" + (
            f" --calls {args.calls}" if args.calls != 2000 else ""
        )
        write_section("models", "Default models: full vs light", command, body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
