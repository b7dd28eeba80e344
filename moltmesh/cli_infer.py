"""``moltmesh infer``: send an input file to a node and print the answer as a table.

Input files (``load_request``): a ``.npy`` array, an image (``.png``/``.jpg``/``.jpeg``/``.bmp``)
or ``.json`` in one of three shapes: a v2 request body (``{"inputs": [{"name", "shape",
"datatype", "data"}, ...]}``, as sent to ``POST /v2/models/{m}/infer``), an object of input name
to nested array (``{"image": [[...]]}``), or a bare nested array (for the model's only input, or
``--input-name``). Each array is cast to the datatype the model declares, with a batch axis
added when it has one dimension fewer; what cannot be cast (text for FP32, ragged rows, objects,
values beyond the datatype's range) is refused with a message naming the file and the input.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from moltmesh.config import default_data_dir

NPY_MAGIC = b"\x93NUMPY"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")

FORMATS_HELP = """\
input files:
  .npy                    one array (numeric or text; not pickled objects)
  .png .jpg .jpeg .bmp    an image, scaled to [0, 1] and resized to the model's input
  .json                   a v2 request body {"inputs": [{"name", "shape", "datatype", "data"}]},
                          an object {"input-name": [...], ...}, or a bare array [[...]]
Arrays are cast to the model's datatype; a batch axis is added when one is missing.
"""


def add_parser(sub: Any) -> None:
    from moltmesh.cli import add_tls_flags

    p = sub.add_parser(
        "infer", help="send an input (.npy, .png/.jpg, .json) to a node and print the answer",
        description="Send one input to a node's v2 API and print each output, the top labels for "
        "classifiers, and which node, route and model variant answered. Without --url the node "
        "running on this machine's data directory is used.",
        epilog=FORMATS_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    p.add_argument("model", help="model name, e.g. defects")
    p.add_argument(
        "input", type=Path, help=".npy array, .png/.jpg image, or .json (formats: see below)"
    )
    p.add_argument(
        "--url", help="node API URL, http://HOST:PORT or https://... (default: the local node's)"
    )
    p.add_argument("--token", help="API token (default: from the data directory)")
    p.add_argument("--data-dir", type=Path, default=None, help="local node's data directory")
    add_tls_flags(p)
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
    client = Client(url, token, cafile=args.cacert)
    meta = client.model_metadata(args.model)
    inputs, params = load_request(args.input, meta, args.input_name)
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


def load_request(
    path: Path, meta: dict[str, Any], input_name: str | None
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The inputs in ``path`` (formats: module docstring), cast to the model's datatypes, and
    the request parameters a v2 body carries (empty for other formats). ``UsageError`` naming
    the file (and the input) for anything unreadable or uncastable."""
    from moltmesh.cli import UsageError

    specs = {s["name"]: s for s in meta["inputs"]}
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".json", *IMAGE_SUFFIXES):
        raise UsageError(
            f"{path}: cannot read {suffix or 'extensionless'} files; use .npy, .png or .json"
        )
    if not path.is_file():
        raise UsageError(f"input file {path} does not exist")
    params: dict[str, Any] = {}
    if suffix == ".npy":
        raw = {_only_input(specs, input_name): _read_npy(path)}
    elif suffix in IMAGE_SUFFIXES:
        name = _only_input(specs, input_name)
        raw = {name: load_image(path, specs[name]["shape"])}
    else:
        raw, params = _read_json(path, specs, input_name)
    out = {}
    for name, value in raw.items():
        if name not in specs:
            raise UsageError(f"{path}: model has no input {name!r}; it has {sorted(specs)}")
        out[name] = to_input(value, specs[name], f"{path}")
    return out, params


def _only_input(specs: dict[str, Any], input_name: str | None) -> str:
    """The input a single-array file fills: ``--input-name``, or the model's only input."""
    from moltmesh.cli import UsageError

    if input_name is None:
        if len(specs) != 1:
            raise UsageError(f"model has inputs {sorted(specs)}; choose one with --input-name")
        return next(iter(specs))
    if input_name not in specs:
        raise UsageError(f"model has no input {input_name!r}; it has {sorted(specs)}")
    return input_name


def _read_npy(path: Path) -> np.ndarray:
    from moltmesh.cli import UsageError

    with path.open("rb") as f:
        magic = f.read(len(NPY_MAGIC))
    if magic != NPY_MAGIC:
        raise UsageError(f"{path} is not a NumPy .npy file (it lacks the .npy header)")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as e:
        if "Object arrays" in str(e):
            raise UsageError(
                f"{path} holds an object array (pickled Python objects), which is not read; "
                "save a numeric or text array"
            ) from None
        raise UsageError(f"{path} is not a readable .npy file: {e}") from None
    except EOFError:
        raise UsageError(f"{path} is a truncated .npy file") from None


def _read_json(
    path: Path, specs: dict[str, Any], input_name: str | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    from moltmesh import v2
    from moltmesh.cli import UsageError

    body = path.read_bytes()
    try:
        data = json.loads(body)
    except RecursionError:
        raise UsageError(f"{path} is not valid JSON: nested too deep") from None
    except ValueError as e:
        raise UsageError(f"{path} is not valid JSON: {e}") from None
    if _is_v2_body(data):
        try:
            request = v2.parse_infer_request(body, None)
        except v2.V2Error as e:
            raise UsageError(f"{path} (a v2 request body): {e}") from None
        return dict(request.inputs), dict(request.parameters)
    if isinstance(data, dict):
        return data, {}
    return {_only_input(specs, input_name): data}, {}


def _is_v2_body(data: Any) -> bool:
    """A v2 request body: ``inputs`` is a list of objects (never tensor data, which holds
    numbers, booleans or strings)."""
    inputs = data.get("inputs") if isinstance(data, dict) else None
    return isinstance(inputs, list) and bool(inputs) and all(isinstance(t, dict) for t in inputs)


def to_input(value: Any, spec: dict[str, Any], source: str) -> np.ndarray:
    """``value`` (nested lists from JSON, or an array) as the input of ``spec``: its datatype,
    contiguous, with a batch axis added when it has one dimension fewer than the model's
    shape. ``UsageError`` "<source>: cannot convert to <datatype> for input '<name>': <why>"."""
    from moltmesh.cli import UsageError
    from moltmesh.v2 import DTYPES

    name, datatype, shape = spec["name"], spec["datatype"], spec["shape"]
    where = f"{source}: cannot convert to {datatype} for input {name!r}"
    if isinstance(value, np.ndarray):
        array = value
    else:
        try:
            array = np.array(value)
        except ValueError:
            raise UsageError(f"{where}: rows of different lengths (ragged)") from None
    if array.ndim == len(shape) - 1:
        array = array[np.newaxis]
    dtype = DTYPES[datatype]
    if dtype == np.object_:
        return _to_bytes(array, where)
    kind = array.dtype.kind
    if kind in "USO":
        what = "text" if kind in "US" else "objects, nulls or mixed values"
        raise UsageError(f"{where}: it holds {what}")
    if kind not in "biuf":
        raise UsageError(f"{where}: it holds {array.dtype} values")
    if kind == "b" and dtype.kind != "b":
        raise UsageError(f"{where}: it holds booleans")
    if dtype.kind == "b" and kind != "b" and not _bool_as_int(array):
        raise UsageError(f"{where}: BOOL takes true/false (or 0/1)")
    if dtype.kind in "iu":
        if kind == "f" and not np.array_equal(array, np.trunc(array)):
            raise UsageError(f"{where}: it holds fractions or non-finite values")
        info = np.iinfo(dtype)
        if array.size and (array.min() < info.min or array.max() > info.max):
            raise UsageError(f"{where}: a value is beyond {datatype}'s range")
    try:
        with np.errstate(over="raise"):
            return np.ascontiguousarray(array, dtype=dtype)
    except FloatingPointError:
        raise UsageError(f"{where}: a value is beyond {datatype}'s range") from None


def _bool_as_int(array: np.ndarray) -> bool:
    """Integers 0 and 1 fill a BOOL input (as v2 JSON allows)."""
    return array.dtype.kind in "iu" and bool(np.isin(array, (0, 1)).all())


def _to_bytes(array: np.ndarray, where: str) -> np.ndarray:
    """Text or bytes as a BYTES (object) array; anything else is refused."""
    from moltmesh.cli import UsageError

    if array.dtype.kind in "US":
        return array.astype(object)
    if array.dtype.kind == "O" and all(isinstance(v, str | bytes) for v in array.ravel()):
        return array
    raise UsageError(f"{where}: BYTES inputs are text")


def load_image(path: Path, shape: list[int]) -> np.ndarray:
    """An image as float32 in [0, 1], shaped [C, H, W] for a model input of [N, C, H, W]."""
    from PIL import Image

    from moltmesh.cli import UsageError

    if len(shape) != 4 or shape[1] not in (1, 3):
        raise UsageError(f"model input shape {shape} is not an image batch [N, 1|3, H, W]")
    channels, height, width = shape[1], shape[2], shape[3]
    try:
        with Image.open(path) as img:
            img = img.convert("L" if channels == 1 else "RGB")
            if height > 0 and width > 0 and img.size != (width, height):
                img = img.resize((width, height))
            array = np.asarray(img, dtype=np.float32) / 255.0
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise UsageError(f"{path} is not a readable image: {e}") from None
    return array[np.newaxis] if channels == 1 else array.transpose(2, 0, 1)
