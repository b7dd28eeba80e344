#!/usr/bin/env python
"""Train, export and evaluate the bundled defect classifiers (``defects`` and ``defects-light``).

Usage (from the repository root, with the ``train`` extra installed)::

    .venv/bin/python scripts/train_defects.py

Deterministic: data from ``moltmesh.bundled.defects`` (seeded), torch seeded with
``torch.use_deterministic_algorithms(True)`` and a fixed thread count, so the same torch build on
the same CPU gives the same weights. Writes, under ``moltmesh/bundled/models/``:

- ``defects/1/model.onnx`` (full) and ``defects-light/1/model.onnx`` (light): opset 17, input
  ``image`` FP32 [N,1,32,32], output ``probabilities`` FP32 [N,4] (softmax inside the graph),
  dynamic batch axis;
- ``labels.txt`` and ``model.toml`` in each model directory (the light one names its cascade
  target and confidence threshold);
- ``metrics.json``: accuracies (all / hard / easy) of full, light and the cascade on the held-out
  test set, evaluated with onnxruntime; escalation rate; MACs/FLOPs counted from the ONNX graphs;
  parameter counts; file sizes.

The cascade threshold is chosen on a separate validation set (``VAL_SEED``), never on the test set.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from moltmesh.bundled import defects  # noqa: E402
from moltmesh.bundled.flops import count_macs  # noqa: E402

MODELS_DIR = ROOT / "moltmesh" / "bundled" / "models"
FULL, LIGHT = "defects", "defects-light"
TORCH_SEED = 20_260_101
TRAIN_CHUNKS = 8
"""Training images: TRAIN_CHUNKS × CHUNK_SIZE, chunk i drawn with seed TRAIN_SEED + i."""
CHUNK_SIZE = 5_000
VAL_SIZE = 4_000
BATCH = 128
OPSET = 17
MAX_CASCADE_LOSS = 0.10
"""Threshold choice: the lowest escalation whose validation accuracy is within this many points
of the full model's."""

DESCRIPTIONS = {
    FULL: "Surface defect classifier for 32x32 grey-scale patches (ok, scratch, spot, crack): "
    "full CNN, the accurate variant.",
    LIGHT: "Surface defect classifier for 32x32 grey-scale patches (ok, scratch, spot, crack): "
    "light CNN on a half-resolution input; escalates doubtful patches to the full model.",
}


class FullNet(nn.Module):
    """Four 3×3 conv stages (12-24-48-64 channels) at 32/16/8/4 px, global max pool, linear."""

    def __init__(self) -> None:
        super().__init__()

        def stage(cin: int, cout: int, pool: bool) -> list[nn.Module]:
            layers: list[nn.Module] = [
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(),
            ]
            return [*layers, nn.MaxPool2d(2)] if pool else layers

        self.features = nn.Sequential(
            *stage(1, 12, True), *stage(12, 24, True), *stage(24, 48, True), *stage(48, 64, False)
        )
        self.head = nn.Linear(64, len(defects.LABELS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return self.head(torch.amax(x, dim=(2, 3)))


class LightNet(nn.Module):
    """Half-resolution input (2×2 average), two small 3×3 conv stages (16-32 channels), global max
    pool, linear: a few percent of the full model's MACs."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.AvgPool2d(2),
            nn.Conv2d(1, 16, 3, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(),
        )
        self.head = nn.Linear(32, len(defects.LABELS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return self.head(torch.amax(x, dim=(2, 3)))


class WithSoftmax(nn.Module):
    """Wraps a logits model so the exported graph outputs probabilities."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(image), dim=1)


def set_determinism(threads: int) -> None:
    """Seed torch and forbid non-deterministic kernels; fix the intra-op thread count."""
    torch.manual_seed(TORCH_SEED)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)


def training_data() -> tuple[torch.Tensor, torch.Tensor]:
    """All training images [N,1,32,32] and labels [N], chunk i drawn with TRAIN_SEED + i."""
    assert TRAIN_CHUNKS <= defects.TRAIN_SEED_SPAN
    chunks = [defects.generate(defects.TRAIN_SEED + i, CHUNK_SIZE) for i in range(TRAIN_CHUNKS)]
    images = np.concatenate([c.images for c in chunks])
    labels = np.concatenate([c.labels for c in chunks])
    return torch.from_numpy(images), torch.from_numpy(labels)


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random flips and transposition (the eight symmetries of the square keep every label)."""
    flips = torch.randint(0, 2, (3,), generator=gen).tolist()
    if flips[0]:
        x = x.flip(2)
    if flips[1]:
        x = x.flip(3)
    if flips[2]:
        x = x.transpose(2, 3)
    return x


def train(
    net: nn.Module, images: torch.Tensor, labels: torch.Tensor, epochs: int, lr: float, name: str
) -> nn.Module:
    """Adam with a one-cycle schedule, cross-entropy, minibatches in a seeded order."""
    gen = torch.Generator().manual_seed(TORCH_SEED)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    steps = epochs * math.ceil(len(images) / BATCH)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    loss_fn = nn.CrossEntropyLoss()
    net.train()
    for epoch in range(epochs):
        start = time.perf_counter()
        order = torch.randperm(len(images), generator=gen)
        total, correct, loss_sum = 0, 0, 0.0
        for lo in range(0, len(images), BATCH):
            idx = order[lo : lo + BATCH]
            x, y = augment(images[idx], gen), labels[idx]
            logits = net(x)
            loss = loss_fn(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.item() * len(idx)
            correct += int((logits.argmax(1) == y).sum())
            total += len(idx)
        print(
            f"[{name}] epoch {epoch + 1}/{epochs} loss {loss_sum / total:.4f} "
            f"train acc {100 * correct / total:.2f}% ({time.perf_counter() - start:.1f} s)",
            flush=True,
        )
    net.eval()
    return net


def export(net: nn.Module, path: Path) -> None:
    """Export ``net`` with softmax to ONNX (legacy exporter, opset 17, dynamic batch)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    model = WithSoftmax(net).eval()
    dummy = torch.zeros(1, 1, defects.SIZE, defects.SIZE)
    torch.onnx.export(
        model,
        (dummy,),
        str(path),
        dynamo=False,
        opset_version=OPSET,
        input_names=["image"],
        output_names=["probabilities"],
        dynamic_axes={"image": {0: "batch"}, "probabilities": {0: "batch"}},
        do_constant_folding=True,
    )
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)


def onnx_params(path: Path) -> int:
    """Number of floating-point weights stored in the ONNX graph (BatchNorm folded)."""
    proto = onnx.load(str(path))
    floats = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE)
    return sum(math.prod(t.dims) for t in proto.graph.initializer if t.data_type in floats)


def predict(path: Path, images: np.ndarray) -> np.ndarray:
    """Probabilities [N,4] from onnxruntime (one thread, batches of 256)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    parts = [
        sess.run(["probabilities"], {"image": images[i : i + 256]})[0]
        for i in range(0, len(images), 256)
    ]
    return np.concatenate(parts)


def cascade(light: np.ndarray, full: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Cascade predictions and the escalation mask: light answers when max prob >= threshold."""
    escalate = light.max(1) < threshold
    return np.where(escalate, full.argmax(1), light.argmax(1)), escalate


def pct(mask: np.ndarray) -> float:
    """Percentage of True in ``mask``, rounded to 2 decimals (0.0 for an empty mask)."""
    return round(100.0 * float(mask.mean()), 2) if mask.size else 0.0


def choose_threshold(light: np.ndarray, full: np.ndarray, labels: np.ndarray) -> float:
    """Lowest-escalation threshold (grid of 0.01) whose cascade accuracy is within
    MAX_CASCADE_LOSS points of the full model's on the validation set."""
    full_acc = 100.0 * float((full.argmax(1) == labels).mean())
    for threshold in np.round(np.arange(0.30, 1.0, 0.01), 2):
        pred, _ = cascade(light, full, float(threshold))
        if 100.0 * float((pred == labels).mean()) >= full_acc - MAX_CASCADE_LOSS:
            return float(threshold)
    return 0.99


def write_model_dir(name: str, cascade_threshold: float | None) -> None:
    """labels.txt and model.toml for one model directory."""
    mdir = MODELS_DIR / name
    (mdir / "labels.txt").write_text("\n".join(defects.LABELS) + "\n", encoding="utf-8")
    toml = f'description = "{DESCRIPTIONS[name]}"\n'
    if cascade_threshold is not None:
        toml += f'\n[cascade]\nescalate_to = "{FULL}"\nconfidence_threshold = {cascade_threshold}\n'
    (mdir / "model.toml").write_text(toml, encoding="utf-8")


def evaluate(threshold_val: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> dict:
    """Evaluate both exported models and the cascade; return the metrics dictionary."""
    full_path = MODELS_DIR / FULL / "1" / "model.onnx"
    light_path = MODELS_DIR / LIGHT / "1" / "model.onnx"
    val = defects.generate(defects.VAL_SEED, VAL_SIZE)
    threshold = choose_threshold(
        predict(light_path, val.images), predict(full_path, val.images), val.labels
    )
    test = defects.generate(defects.TEST_SEED, defects.TEST_SIZE)
    full_p, light_p = predict(full_path, test.images), predict(light_path, test.images)
    y, hard = test.labels, test.hard
    casc, escalate = cascade(light_p, full_p, threshold)

    def acc(pred: np.ndarray) -> dict[str, float]:
        ok = pred == y
        return {
            "accuracy": pct(ok),
            "accuracy_hard": pct(ok[hard]),
            "accuracy_easy": pct(ok[~hard]),
        }

    def model_entry(path: Path, probs: np.ndarray) -> dict:
        macs = count_macs(path)
        return {
            **acc(probs.argmax(1)),
            "macs": macs,
            "flops": 2 * macs,
            "params": onnx_params(path),
            "file_bytes": path.stat().st_size,
        }

    return {
        "labels": list(defects.LABELS),
        "test_set": {"seed": defects.TEST_SEED, "size": defects.TEST_SIZE, "hard": int(hard.sum())},
        "models": {FULL: model_entry(full_path, full_p), LIGHT: model_entry(light_path, light_p)},
        "cascade": {
            **acc(casc),
            "confidence_threshold": threshold,
            "escalation_rate": pct(escalate),
            "escalation_rate_hard": pct(escalate[hard]),
            "escalation_rate_easy": pct(escalate[~hard]),
        },
        "flops_method": "MACs of Conv/Gemm/MatMul nodes counted from the ONNX graph with batch 1 "
        "(moltmesh.bundled.flops.count_macs); FLOPs = 2 x MACs; pooling, activations and "
        "softmax not counted",
        "accuracy_unit": "percent of the held-out test set",
    }


DOCS = ROOT / "docs" / "models.md"
BEGIN, END = "<!-- metrics:begin -->", "<!-- metrics:end -->"


def metrics_tables(metrics: dict) -> str:
    """The two Markdown tables of docs/models.md (tests/moltmesh/test_default_model.py parses
    them and checks they equal metrics.json)."""
    rows = [
        "| variant | accuracy % | hard % | easy % | MACs | FLOPs | params | ONNX bytes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in (FULL, LIGHT):
        m = metrics["models"][name]
        rows.append(
            f"| {name} | {m['accuracy']:.2f} | {m['accuracy_hard']:.2f} | "
            f"{m['accuracy_easy']:.2f} | {m['macs']:,} | {m['flops']:,} | {m['params']:,} | "
            f"{m['file_bytes']:,} |"
        )
    c = metrics["cascade"]
    rows.append(
        f"| cascade | {c['accuracy']:.2f} | {c['accuracy_hard']:.2f} | "
        f"{c['accuracy_easy']:.2f} | — | — | — | — |"
    )
    rows += [
        "",
        "| confidence threshold | escalated % | escalated, hard % | escalated, easy % |",
        "|---:|---:|---:|---:|",
        f"| {c['confidence_threshold']} | {c['escalation_rate']:.2f} | "
        f"{c['escalation_rate_hard']:.2f} | {c['escalation_rate_easy']:.2f} |",
    ]
    t = metrics["test_set"]
    full, light = metrics["models"][FULL], metrics["models"][LIGHT]
    summary = (
        f"The light model needs {100 * light['macs'] / full['macs']:.1f} % of the full model's "
        f"MACs and is {full['accuracy_hard'] - light['accuracy_hard']:.2f} points worse on the "
        f"hard subset; the cascade at threshold {c['confidence_threshold']} escalates "
        f"{c['escalation_rate']:.2f} % of the patches ({c['escalation_rate_hard']:.2f} % of the "
        f"hard ones, {c['escalation_rate_easy']:.2f} % of the others) and ends "
        f"{full['accuracy'] - c['accuracy']:.2f} points below the full model."
    )
    return (
        f"Held-out test set: seed {t['seed']}, {t['size']:,} patches, {t['hard']:,} of them "
        "hard.\n\n" + "\n".join(rows) + "\n\n" + summary
    )


def update_docs(metrics: dict) -> None:
    """Replace the generated part of docs/models.md (between the metrics markers)."""
    if not DOCS.exists():
        print(f"{DOCS} missing; tables not written")
        return
    text = DOCS.read_text(encoding="utf-8")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    DOCS.write_text(f"{head}{BEGIN}\n{metrics_tables(metrics)}\n{END}{tail}", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--full-epochs", type=int, default=6)
    parser.add_argument("--light-epochs", type=int, default=5)
    parser.add_argument(
        "--eval-only",
        action="store_true",
        help="skip training; re-evaluate the committed .onnx files",
    )
    parser.add_argument(
        "--only",
        choices=(FULL, LIGHT),
        help="train only this model and keep the other's committed .onnx (each model has its "
        "own torch seed, so the result equals a full run's)",
    )
    args = parser.parse_args(argv)
    set_determinism(args.threads)
    if not args.eval_only:
        start = time.perf_counter()
        images, labels = training_data()
        print(f"generated {len(images)} training images in {time.perf_counter() - start:.1f} s")
    if not args.eval_only and args.only in (None, FULL):
        torch.manual_seed(TORCH_SEED)
        full = train(FullNet(), images, labels, args.full_epochs, 3e-3, FULL)
        export(full, MODELS_DIR / FULL / "1" / "model.onnx")
    if not args.eval_only and args.only in (None, LIGHT):
        torch.manual_seed(TORCH_SEED + 1)
        light = train(LightNet(), images, labels, args.light_epochs, 1e-2, LIGHT)
        export(light, MODELS_DIR / LIGHT / "1" / "model.onnx")
    metrics = evaluate()
    threshold = metrics["cascade"]["confidence_threshold"]
    write_model_dir(FULL, None)
    write_model_dir(LIGHT, threshold)
    (MODELS_DIR / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(metrics, indent=2))
    update_docs(metrics)
    print(metrics_tables(metrics))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
