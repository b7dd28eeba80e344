"""``moltmesh models list|quantize``: inspect the model repository and make variants.

``quantize`` never writes into the bundled models (the installed package): a bundled model is
copied into the user's repository given by ``--output`` and its variants are made there.
"""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runtimes.base import TensorSpec
    from runtimes.repository import ModelEntry, ModelRepository

LIST_COLUMNS = ("model", "versions", "variants", "inputs", "outputs", "description", "path")
TABLE_MIN_WIDTH = 120
"""Terminal columns below which ``models list`` prints one block per model instead of a table."""

REPOSITORY_HELP = (
    "model repository in Triton's layout, <DIR>/<model>/<version>/model.onnx, searched before "
    "the bundled models (repeatable; replaces runtime.model_repository of the config)"
)


def add_parser(sub: Any) -> None:
    from moltmesh.cli import add_node_config_flags

    models = sub.add_parser(
        "models", help="list the models a node would serve; make int8/fp16 variants",
        description="Models live in Triton's layout: <repo>/<model>/<version>/model.onnx, with "
        "variants model.int8.onnx and model.fp16.onnx beside it.",
    )  # fmt: skip
    msub = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    lst = msub.add_parser(
        "list", help="table of models, versions, variants and tensors",
        description="A table of the models a node with this configuration would serve: versions, "
        "the variants present, the input and output tensors of the latest version (name, "
        "datatype, shape; -1 is a dimension of any size), description and directory; then "
        "every problem found (an unusable repository root, a malformed model directory).",
    )  # fmt: skip
    add_node_config_flags(lst)
    lst.add_argument(
        "--model-repository", type=Path, action="append", metavar="DIR", help=REPOSITORY_HELP
    )
    lst.set_defaults(func=cmd_list)
    q = msub.add_parser(
        "quantize", help="make the int8 and fp16 variants of a model",
        description="Writes model.int8.onnx (onnxruntime quantization: static with calibration "
        "data for the bundled models and copies of them, dynamic otherwise) and model.fp16.onnx "
        "(where it runs on this machine) beside every version's model.onnx. The bundled models "
        "are part of the installed package and are not written to: give --output DIR to copy "
        "the model into your repository DIR and make its variants there, then serve it with "
        "--model-repository DIR (your copy wins over the bundled one).",
    )  # fmt: skip
    add_node_config_flags(q)
    q.add_argument("model", help="model name in the repository")
    q.add_argument(
        "--model-repository", type=Path, action="append", metavar="DIR", help=REPOSITORY_HELP
    )
    q.add_argument(
        "--output", type=Path, metavar="DIR",
        help="a repository of yours to write into: the model is quantized there when DIR holds "
        "it, else copied there first (model.onnx files, model.toml, labels.txt); needed for a "
        "bundled model. DIR is created if missing",
    )  # fmt: skip
    q.set_defaults(func=cmd_quantize)


def _roots(args: argparse.Namespace) -> list[Path]:
    from moltmesh.cli import config_from
    from moltmesh.node import Node

    return Node(config_from(args), serve_api=False).model_roots()


def cmd_list(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from runtimes.errors import RepositoryRootProblem
    from runtimes.repository import ModelRepository

    repo = ModelRepository(_roots(args))
    scan_log = logging.getLogger("runtimes.repository")
    level = scan_log.level
    scan_log.setLevel(logging.ERROR)  # the problems are printed below, once each
    try:
        scan = repo.scan()
    finally:
        scan_log.setLevel(level)
    rows = []
    for name in sorted(scan.entries):
        entry = scan.entries[name]
        variants = sorted({v for vs in entry.variants.values() for v in vs})
        inputs, outputs = _tensors(repo, entry)
        rows.append((entry.name, ", ".join(entry.versions), ", ".join(variants), inputs, outputs,
                     entry.description, str(entry.path)))  # fmt: skip
    console = Console()
    if console.width >= TABLE_MIN_WIDTH:
        table = Table(title="models")
        for col in LIST_COLUMNS[:3]:
            table.add_column(col, no_wrap=True)  # names stay whole (and greppable)
        for col in LIST_COLUMNS[3:]:
            table.add_column(col, overflow="fold")  # wrapped, never cut off
        for row in rows:
            table.add_row(*row)
        console.print(table)
    else:  # a narrow terminal: one block per model, a field per line
        for row in rows:
            console.print(f"[bold]{row[0]}[/]", soft_wrap=True)
            for col, value in zip(LIST_COLUMNS[1:], row[1:], strict=True):
                lines = value.splitlines() or [""]
                console.print(f"  {col:<11} {lines[0]}", soft_wrap=True)
                for line in lines[1:]:
                    console.print(f"  {'':<11} {line}", soft_wrap=True)
    for problem in scan.problems:
        kind = "unusable root" if isinstance(problem, RepositoryRootProblem) else "skipped"
        console.print(f"[yellow]{kind}[/]: {problem}", soft_wrap=True)
    return 0


def _tensors(repo: ModelRepository, entry: ModelEntry) -> tuple[str, str]:
    """The inputs and outputs of the latest version, one ``name DATATYPE[shape]`` per line.

    The model is loaded (no warm-up) to read them; a model that does not load says why instead.
    """
    from runtimes.errors import RuntimeErrorBase
    from runtimes.onnx import OnnxOptions

    version = entry.latest
    options = OnnxOptions(intra_op_threads=1, inter_op_threads=1, warmup_runs=0)
    try:
        runtime = repo.load(entry.name, version, entry.variants[version][0], options=options)
    except RuntimeErrorBase as exc:
        return f"cannot load: {exc}", ""
    try:
        metadata = runtime.metadata
    finally:
        runtime.close()
    return _specs(metadata.inputs), _specs(metadata.outputs)


def _specs(specs: tuple[TensorSpec, ...]) -> str:
    return "\n".join(f"{s.name} {s.datatype}[{','.join(map(str, s.shape))}]" for s in specs)


def cmd_quantize(args: argparse.Namespace) -> int:
    from rich.console import Console

    from moltmesh.bundled import MODELS_DIR
    from moltmesh.cli import UsageError
    from runtimes.repository import ModelRepository
    from runtimes.variants import make_variants

    console = Console()
    roots = _roots(args)
    output: Path | None = args.output
    if output is not None:
        if _inside(output, MODELS_DIR):
            raise UsageError(f"--output {output} is inside the bundled models; name your own")
        output.mkdir(parents=True, exist_ok=True)
        roots = [output, *roots]
    entry = ModelRepository(roots).entry(args.model)
    if output is not None and not _inside(entry.path, output):
        target = output / args.model
        _copy_model(entry.path, target)
        console.print(f"copied {entry.path} to {target}", soft_wrap=True)
        entry = ModelRepository([output]).entry(args.model)
    if _inside(entry.path, MODELS_DIR):
        raise UsageError(
            f"model {args.model!r} is bundled with moltmesh ({entry.path}) and its variants are "
            "not written into the installed package: give --output DIR to copy it into your "
            "repository DIR and quantize it there, then serve it with --model-repository DIR"
        )
    for version in entry.versions:
        with console.status(f"quantizing {args.model} v{version}"):
            calibration = _calibration_for(entry, version)
            made = make_variants(entry.path / version, calibration=calibration)
        for path in made:
            console.print(f"wrote {path}", soft_wrap=True)
    return 0


def _inside(path: Path, root: Path) -> bool:
    return path.resolve().is_relative_to(root.resolve())


def _copy_model(src: Path, dst: Path) -> None:
    """Copy a model directory without variant files or hidden entries; ``dst`` must not exist."""
    from runtimes.base import VARIANT_FULL
    from runtimes.repository import VARIANT_FILES

    variants = {name for v, name in VARIANT_FILES.items() if v != VARIANT_FULL}

    def ignore(_directory: str, names: list[str]) -> list[str]:
        return [n for n in names if n in variants or n.startswith(".")]

    shutil.copytree(src, dst, ignore=ignore)


def _calibration_for(entry: ModelEntry, version: str) -> Any:
    """Calibration samples for a bundled defect model (its own generator); None otherwise.

    A version counts as bundled when its ``model.onnx`` is byte for byte the bundled one (a copy
    made by ``--output`` is); a user's model that only shares the name is quantized dynamically.
    """
    from moltmesh.bundled import MODELS_DIR, defects
    from runtimes.repository import VARIANT_FILES

    full = VARIANT_FILES["full"]
    bundled = MODELS_DIR / entry.name / version / full
    if entry.name not in ("defects", "defects-light") or not bundled.is_file():
        return None
    if (entry.path / version / full).read_bytes() != bundled.read_bytes():
        return None
    data = defects.generate(defects.TRAIN_SEED + 1, 256)
    return [{"image": data.images[i : i + 16]} for i in range(0, 256, 16)]
