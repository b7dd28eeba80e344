"""``moltmesh infer``: send an input file to a node and print the answer as a table."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from moltmesh.config import default_data_dir


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "infer", help="send an input (.npy, .png/.jpg, .json) to a node and print the answer",
        description="Send one input to a node's v2 API and print each output, the top labels for "
        "classifiers, and which node, route and model variant answered. Without --url the node "
        "running on this machine's data directory is used.",
    )  # fmt: skip
    p.add_argument("model", help="model name, e.g. defects")
    p.add_argument("input", type=Path, help=".npy array, .png/.jpg image, or .json tensor(s)")
    p.add_argument("--url", help="node API URL (default: from the data directory)")
    p.add_argument("--token", help="API token (default: from the data directory)")
    p.add_argument("--data-dir", type=Path, default=None, help="local node's data directory")
    p.add_argument("--json", action="store_true", help="send JSON tensors instead of binary")
    p.add_argument("--urgency", type=float, help="0..1; urgent work may take the cloud route")
    p.add_argument("--deadline-ms", type=float, help="answer within this many milliseconds")
    p.add_argument("--input-name", help="model input to fill (default: its only input)")
    p.set_defaults(func=cmd_infer)


def cmd_infer(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from moltmesh.cli import UsageError
    from moltmesh.client import Client, local_endpoint

    url, token = args.url, args.token
    if url is None or token is None:
        local_url, local_token = local_endpoint(args.data_dir or default_data_dir())
        url, token = url or local_url, token or local_token
    client = Client(url, token)
    meta = client.model_metadata(args.model)
    inputs = load_inputs(args.input, meta, args.input_name)
    params: dict[str, Any] = {}
    if args.urgency is not None:
        params["urgency"] = args.urgency
    if args.deadline_ms is not None:
        params["deadline_ms"] = args.deadline_ms
    try:
        answer = client.infer(args.model, inputs, binary=not args.json, parameters=params)
    except ValueError as e:
        raise UsageError(str(e)) from None
    labels = meta.get("parameters", {}).get("labels")
    table = Table(title=f"{answer.model} v{answer.version}")
    table.add_column("output")
    table.add_column("item", justify="right")
    table.add_column("answer")
    for name, array in answer.outputs.items():
        for i, row in enumerate(array.reshape(array.shape[0], -1) if array.ndim else [array]):
            table.add_row(name, str(i), escape(describe(np.asarray(row), labels)))
    console = Console()
    console.print(table)
    p = answer.parameters
    console.print(
        f"route [bold]{p.get('route', '?')}[/] · node {p.get('node', '?')} · "
        f"variant {p.get('variant', '?')}"
    )
    return 0


def describe(row: np.ndarray, labels: list[str] | None) -> str:
    """A class probability row as 'label (p)' with the runner-up; BYTES as text; anything else
    as values. Plain text: the caller escapes it for rich (``[b'x']`` would be markup)."""
    if labels and row.size == len(labels) and row.dtype.kind == "f":
        order = np.argsort(row)[::-1]
        return ", ".join(f"{labels[j]} {row[j]:.3f}" for j in order[:2])
    flat = row.ravel()
    if flat.dtype == np.object_:
        texts = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in flat]
        shown = ", ".join(repr(t) for t in texts[:8])
        return shown if len(texts) <= 8 else f"{shown}, … ({len(texts)} values)"
    text = np.array2string(flat[:8], precision=4, separator=", ")
    return text if flat.size <= 8 else text[:-1] + f", … ({flat.size} values)]"


def load_inputs(path: Path, meta: dict[str, Any], input_name: str | None) -> dict[str, np.ndarray]:
    """Read ``path`` into the model's input(s), adding a batch axis and casting as needed."""
    from moltmesh.cli import UsageError
    from moltmesh.v2 import DTYPES

    specs = {s["name"]: s for s in meta["inputs"]}
    if input_name is None:
        if len(specs) != 1 and path.suffix.lower() != ".json":
            raise UsageError(f"model has inputs {sorted(specs)}; choose one with --input-name")
        input_name = next(iter(specs))
    if input_name not in specs:
        raise UsageError(f"model has no input {input_name!r}; it has {sorted(specs)}")
    suffix = path.suffix.lower()
    if not path.exists():
        raise UsageError(f"input file {path} does not exist")
    if suffix == ".npy":
        raw = {input_name: np.load(path, allow_pickle=False)}
    elif suffix in (".png", ".jpg", ".jpeg", ".bmp"):
        raw = {input_name: load_image(path, specs[input_name]["shape"])}
    elif suffix == ".json":
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise UsageError(f"{path} is not valid JSON: {e}") from None
        raw = (
            {k: np.asarray(v) for k, v in data.items()}
            if isinstance(data, dict)
            else {input_name: np.asarray(data)}
        )
    else:
        raise UsageError(f"cannot read {suffix or 'extensionless'} files; use .npy, .png or .json")
    out = {}
    for name, array in raw.items():
        if name not in specs:
            raise UsageError(f"model has no input {name!r}; it has {sorted(specs)}")
        shape, dtype = specs[name]["shape"], DTYPES[specs[name]["datatype"]]
        if array.ndim == len(shape) - 1:
            array = array[np.newaxis]
        out[name] = np.ascontiguousarray(array, dtype=dtype)
    return out


def load_image(path: Path, shape: list[int]) -> np.ndarray:
    """An image as float32 in [0, 1], shaped [C, H, W] for a model input of [N, C, H, W]."""
    from PIL import Image

    from moltmesh.cli import UsageError

    if len(shape) != 4 or shape[1] not in (1, 3):
        raise UsageError(f"model input shape {shape} is not an image batch [N, 1|3, H, W]")
    channels, height, width = shape[1], shape[2], shape[3]
    with Image.open(path) as img:
        img = img.convert("L" if channels == 1 else "RGB")
        if height > 0 and width > 0 and img.size != (width, height):
            img = img.resize((width, height))
        array = np.asarray(img, dtype=np.float32) / 255.0
    return array[np.newaxis] if channels == 1 else array.transpose(2, 0, 1)
