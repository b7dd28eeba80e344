"""``moltmesh models list|quantize``: inspect the model repository and make variants."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> None:
    from moltmesh.cli import add_node_config_flags

    models = sub.add_parser(
        "models", help="list the models a node would serve; make int8/fp16 variants",
        description="Models live in Triton's layout: <repo>/<model>/<version>/model.onnx, with "
        "variants model.int8.onnx and model.fp16.onnx beside it.",
    )  # fmt: skip
    msub = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    lst = msub.add_parser("list", help="table of models, versions, variants and tensors")
    add_node_config_flags(lst)
    lst.add_argument("--model-repository", type=Path, action="append")
    lst.set_defaults(func=cmd_list)
    q = msub.add_parser(
        "quantize", help="make the int8 and fp16 variants of a model",
        description="Writes model.int8.onnx (onnxruntime quantization: static with calibration "
        "data for the bundled models, dynamic otherwise) and model.fp16.onnx (where it runs on "
        "this machine) beside every version's model.onnx.",
    )  # fmt: skip
    add_node_config_flags(q)
    q.add_argument("model", help="model name in the repository")
    q.add_argument("--model-repository", type=Path, action="append")
    q.set_defaults(func=cmd_quantize)


def _repository(args: argparse.Namespace) -> Any:
    from moltmesh.cli import config_from
    from moltmesh.node import Node
    from runtimes.repository import ModelRepository

    return ModelRepository(Node(config_from(args), serve_api=False).model_roots())


def cmd_list(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    repo = _repository(args)
    table = Table(title="models")
    for col in ("model", "versions", "variants", "description", "path"):
        table.add_column(col)
    for entry in repo.index():
        variants = sorted({v for vs in entry.variants.values() for v in vs})
        table.add_row(entry.name, ", ".join(entry.versions), ", ".join(variants),
                      entry.description, str(entry.path))  # fmt: skip
    console = Console()
    console.print(table)
    for problem in repo.problems():
        console.print(f"[yellow]skipped[/]: {problem}")
    return 0


def cmd_quantize(args: argparse.Namespace) -> int:
    from rich.console import Console

    from runtimes.variants import make_variants

    repo = _repository(args)
    entry = repo.entry(args.model)
    calibration = _calibration_for(args.model)
    console = Console()
    for version in entry.versions:
        with console.status(f"quantizing {args.model} v{version}"):
            made = make_variants(entry.path / version, calibration=calibration)
        for path in made:
            console.print(f"wrote {path}")
    return 0


def _calibration_for(model: str) -> Any:
    """Calibration samples for the bundled defect models (their own generator); None otherwise."""
    if model not in ("defects", "defects-light"):
        return None
    from moltmesh.bundled import defects

    data = defects.generate(defects.TRAIN_SEED + 1, 256)
    return [{"image": data.images[i : i + 16]} for i in range(0, 256, 16)]
