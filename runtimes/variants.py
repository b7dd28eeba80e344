"""Model variants: making int8 and fp16 files from a full model, and choosing one for a node.

Files (next to ``model.onnx`` in a version directory, see :mod:`runtimes.repository`):

- ``model.int8.onnx``: onnxruntime quantization. With calibration data, static quantization in
  the QDQ format (8-bit weights and activations, ranges by min/max over the calibration samples);
  without, dynamic quantization of the linear ops (8-bit weights, activations quantized at run
  time). See :func:`quantize_int8` for the choices made.
- ``model.fp16.onnx``: weights and arithmetic in float16 with inputs and outputs kept float32, so
  clients send and receive the same tensors whichever variant answers. Made only where it runs: the
  converted file is loaded and run on the CPU provider before it is kept.

Every produced file is written to a temporary name, verified (loads, runs on zeros and ones with
finite outputs wherever the full model has them) and only then renamed into place, so a failure
never leaves a half-made variant.

The variant choice rule (:func:`choose_variant`) is pure: no I/O, no clock, usable by the simulator.
onnxruntime's quantization tools are imported only when a variant is made.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from runtimes.base import VARIANT_FP16, VARIANT_FULL, VARIANT_INT8, VARIANTS
from runtimes.errors import InvalidModel, RuntimeErrorBase, VariantNotAvailable
from runtimes.repository import VARIANT_FILES

if TYPE_CHECKING:
    import onnx

log = logging.getLogger(__name__)

Calibration = Iterable[Mapping[str, np.ndarray]]
"""Calibration samples: each a ``{input name: array}`` feed, as for ``Runtime.run``."""

# --- choosing -------------------------------------------------------------------------------------

TIER_LIGHT = "light"
TIER_STANDARD = "standard"
TIER_HEAVY = "heavy"
TIERS: tuple[str, ...] = (TIER_LIGHT, TIER_STANDARD, TIER_HEAVY)

HIGH_LOAD = 0.8
"""Load (0..1, the busier of CPU and memory use) at and above which a standard node saves work."""

# The rule, as preference orders: the first available variant of the matching row is chosen.
_SAVE = (VARIANT_INT8, VARIANT_FP16, VARIANT_FULL)  # smallest and cheapest first
_BALANCED = (VARIANT_FULL, VARIANT_INT8, VARIANT_FP16)  # accuracy, then the cheap fallback
_ACCURATE = (VARIANT_FULL, VARIANT_FP16, VARIANT_INT8)  # accuracy first, then closest to it


def variant_preference(tier: str, on_battery: bool, load: float) -> tuple[str, ...]:
    """The order in which a node of ``tier`` prefers variants; see :func:`choose_variant`."""
    if tier not in TIERS:
        raise ValueError(f"unknown tier {tier!r} (known: {', '.join(TIERS)})")
    if math.isnan(load) or load < 0:
        raise ValueError(f"load must be a number >= 0, got {load!r}")
    if tier == TIER_LIGHT or on_battery:
        return _SAVE
    if tier == TIER_STANDARD:
        return _SAVE if load >= HIGH_LOAD else _BALANCED
    return _ACCURATE


def choose_variant(
    available: Iterable[str],
    tier: str,
    on_battery: bool,
    load: float,
    *,
    prefer_fp16: bool = False,
) -> str:
    """The variant a node should serve, from the variants ``available`` for the model.

    The rule (first available variant of the first matching row):

    ==================================  ===========================  ===========================
    node                                preference                   why
    ==================================  ===========================  ===========================
    light tier, or on battery (saver)   int8, fp16, full             least compute and memory
    standard tier, load >= 0.8          int8, fp16, full             shed work while busy
    standard tier, load < 0.8           full, int8, fp16             accuracy, cheap fallback
    heavy tier (mains power)            full, fp16, int8             accuracy; cascades end here
    ==================================  ===========================  ===========================

    ``load`` is the node's utilisation, 0..1 (values above 1 count as overloaded). Where accuracy
    comes first, fp16 ranks behind full: onnxruntime's CPU provider runs it no faster (it casts
    around the ops it lacks fp16 kernels for); where saving comes first, it ranks before full
    because it halves the weights' memory. Pass ``prefer_fp16=True`` when the provider runs fp16
    natively (GPU, NPU) to rank fp16 just before full in every row. Unknown names in
    ``available`` are ignored. Raises ``ValueError`` for an unknown tier or a negative/NaN load,
    ``VariantNotAvailable`` when no known variant is available.
    """
    order = variant_preference(tier, on_battery, load)
    if prefer_fp16:
        order = tuple(v for v in order if v != VARIANT_FP16)
        at = order.index(VARIANT_FULL)
        order = (*order[:at], VARIANT_FP16, *order[at:])
    have = set(available)
    for variant in order:
        if variant in have:
            return variant
    raise VariantNotAvailable(
        "any", f"none of {', '.join(VARIANTS)} among the available {sorted(have)}"
    )


# --- making ---------------------------------------------------------------------------------------


def quantize_int8(src: Path | str, dst: Path | str, calibration: Calibration | None = None) -> Path:
    """Write an int8 variant of the ONNX model ``src`` to ``dst``; return ``dst``.

    With ``calibration`` (an iterable of input feeds; tens of samples typical of real inputs),
    static quantization: QDQ format, activation ranges by min/max over the samples, weights per
    output channel, and the first weighted layers (those reading a model input directly) kept in
    float when other layers remain to quantize: they see the raw input, where faint features
    (low-contrast defects) live, and cost little. Without,
    dynamic quantization of the weight-heavy linear ops (MatMul, Gemm, Attention, LSTM, Gather,
    ...), leaving convolutions in float: onnxruntime's dynamic ConvInteger is several times slower
    than float on CPU, so a CNN needs calibration data to gain an int8 variant.

    Both use uint8 for weights and activations. The faster int8-weight kernels saturate on x86
    CPUs without VNNI (AVX2 only). Measured on a CNN shaped like the bundled defect classifier
    (AVX2 machine, 4,000 generated test patches, top-1 agreement with the full model): int8
    weights and activations 88 %, uint8 per tensor 97.6 %, uint8 per channel 98.9 %, and with the
    first layer kept in float 99.7 %.

    Raises ``VariantNotAvailable("int8", reason)`` when onnxruntime cannot quantize the model,
    nothing in it was quantized, or the result does not run; ``dst`` is then untouched.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.registry import IntegerOpsRegistry

    class _Reader(CalibrationDataReader):
        def __init__(self, samples: Iterator[Mapping[str, np.ndarray]]) -> None:
            self._samples = samples

        def get_next(self) -> dict[str, np.ndarray] | None:
            sample = next(self._samples, None)
            return None if sample is None else dict(sample)

    src, dst = Path(src), Path(dst)

    def _quantize(tmp: Path) -> None:
        if calibration is None:
            quantize_dynamic(
                src,
                tmp,
                op_types_to_quantize=[op for op in IntegerOpsRegistry if op != "Conv"],
                weight_type=QuantType.QUInt8,
            )
        else:
            model, first_layers = _named_model(src)
            quantize_static(
                model,
                tmp,
                _Reader(iter(calibration)),
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QUInt8,
                per_channel=True,
                nodes_to_exclude=first_layers,
            )

    def make(tmp: Path) -> None:
        with _without_preprocess_hint():
            _quantize(tmp)
        if not _has_quantized_weights(tmp):
            how = "static" if calibration is not None else "dynamic (give calibration data)"
            raise ValueError(f"{how} quantization found no weights to quantize")

    return _produce(VARIANT_INT8, src, dst, make)


PREPROCESS_HINT = "pre-processing before quantization"
"""Words of onnxruntime's hint (logged twice per quantization) that :func:`quantize_int8` drops."""


class _DropPreprocessHint(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return PREPROCESS_HINT not in record.getMessage()


@contextlib.contextmanager
def _without_preprocess_hint() -> Iterator[None]:
    """Within the block, drop onnxruntime's "Please consider pre-processing" hint.

    onnxruntime's quantizers log it through the root logger with ``logging.warning``, which also
    runs ``logging.basicConfig`` when the root logger has no handler, leaving a stderr handler on
    it for the rest of the process. Within the block the root logger gets a filter dropping the
    hint (a logger's filters see only records logged on it: other loggers' warnings pass) and, when
    it has no handler, Python's last-resort handler, so that ``basicConfig`` does nothing and
    other warnings still show as they would. Both are removed on exit; the filter is process-wide
    while the block runs.

    The pre-processing itself (symbolic shape inference and graph fusion) is not run: it renames
    and fuses nodes, which would defeat excluding the first layers by name and change the
    accuracy measured for the variants; the models served here are small and already shaped.
    """
    root = logging.getLogger()
    hint = _DropPreprocessHint()
    added: logging.Handler | None = None
    if not root.handlers:
        added = logging.lastResort or logging.NullHandler()
        root.addHandler(added)
    root.addFilter(hint)
    try:
        yield
    finally:
        root.removeFilter(hint)
        if added is not None:
            root.removeHandler(added)


_WEIGHTED_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})


def _named_model(path: Path) -> tuple[onnx.ModelProto, list[str]]:
    """The model at ``path`` with every node named, and the names of its first weighted layers.

    First layers are the weighted nodes reading a graph input directly; the list is empty when
    they are the only weighted nodes (keeping them in float would leave nothing to quantize).
    Names matter because onnxruntime's quantizer excludes nodes by name.
    """
    import onnx

    model = onnx.load(str(path))
    taken = {n.name for n in model.graph.node if n.name}
    for i, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)
    graph = model.graph
    inputs = {i.name for i in graph.input} - {t.name for t in graph.initializer}
    weighted = [n for n in graph.node if n.op_type in _WEIGHTED_OPS]
    first = [n.name for n in weighted if inputs.intersection(n.input)]
    return model, (first if len(first) < len(weighted) else [])


def _has_quantized_weights(path: Path) -> bool:
    import onnx

    model = onnx.load(str(path))
    int8 = (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)
    return any(t.data_type in int8 and len(t.dims) > 1 for t in model.graph.initializer)


def convert_fp16(src: Path | str, dst: Path | str) -> Path:
    """Write an fp16 variant of ``src`` to ``dst`` (inputs and outputs stay fp32); return ``dst``.

    Raises ``VariantNotAvailable("fp16", reason)`` when the conversion fails or the converted model
    does not load and run on the CPU provider; ``dst`` is then untouched.
    """
    import onnx
    from onnxruntime.transformers import float16

    src, dst = Path(src), Path(dst)

    def make(tmp: Path) -> None:
        model = onnx.load(str(src))
        converted = float16.convert_float_to_float16(model, keep_io_types=True)
        onnx.save(converted, str(tmp))

    return _produce(VARIANT_FP16, src, dst, make)


def make_variants(model_dir: Path | str, calibration: Calibration | None = None) -> list[Path]:
    """Make the int8 and fp16 variants of every version of a model; return the files written.

    ``model_dir`` is a model directory (``<repo>/<model>``, each numeric version directory with a
    ``model.onnx`` is done) or a single version directory holding ``model.onnx``. Existing variant
    files are replaced. int8 must succeed (``VariantNotAvailable`` otherwise); fp16 is made where it
    runs and skipped with a warning where it does not.
    """
    model_dir = Path(model_dir)
    full = VARIANT_FILES[VARIANT_FULL]
    if (model_dir / full).is_file():
        version_dirs = [model_dir]
    else:
        version_dirs = (
            sorted(
                (d for d in model_dir.iterdir() if d.name.isdigit() and (d / full).is_file()),
                key=lambda d: int(d.name),
            )
            if model_dir.is_dir()
            else []
        )
    if not version_dirs:
        raise InvalidModel(model_dir, f"no version directory holding a {full}")
    samples = None if calibration is None else list(calibration)
    made: list[Path] = []
    for version_dir in version_dirs:
        src = version_dir / full
        made.append(quantize_int8(src, version_dir / VARIANT_FILES[VARIANT_INT8], samples))
        try:
            made.append(convert_fp16(src, version_dir / VARIANT_FILES[VARIANT_FP16]))
        except VariantNotAvailable as exc:
            log.warning("%s: %s", version_dir, exc)
    return made


def _produce(variant: str, src: Path, dst: Path, make: Callable[[Path], None]) -> Path:
    """Run ``make(tmp)``, verify ``tmp``, move it to ``dst``; ``VariantNotAvailable`` on failure."""
    if not src.is_file():
        raise VariantNotAvailable(variant, f"source model {src} not found")
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        try:
            make(tmp)
        except Exception as exc:  # the onnx/onnxruntime tools raise many exception types
            raise VariantNotAvailable(variant, f"conversion of {src} failed: {exc}") from None
        _verify(variant, src, tmp)
        os.replace(tmp, dst)
        log.info("wrote %s variant %s", variant, dst)
        return dst
    finally:
        tmp.unlink(missing_ok=True)


def _verify(variant: str, src: Path, path: Path) -> None:
    """Check that ``path`` loads and runs on the CPU provider wherever the full model ``src`` does.

    Both run on zeros and on ones; the variant must give finite outputs wherever the full model
    does (overflow is the usual failure of fp16).
    """
    from runtimes.onnx import OnnxOptions, OnnxRuntime, warmup_inputs

    options = OnnxOptions(providers=(), warmup_runs=1)
    try:
        runtime = OnnxRuntime(path, options=options)
    except InvalidModel as exc:
        raise VariantNotAvailable(
            variant, f"the converted model does not run: {exc.reason}"
        ) from None
    reference = OnnxRuntime(src, options=options)
    try:
        for fill in (0, 1):
            feed = warmup_inputs(reference.metadata, fill)
            try:
                expected = reference.run(feed)
            except RuntimeErrorBase:
                continue  # the full model cannot run on these either
            try:
                got = runtime.run(feed)
            except RuntimeErrorBase as exc:
                raise VariantNotAvailable(
                    variant, f"the converted model does not run on {fill}s: {exc}"
                ) from None
            for name, value in got.items():
                finite = np.isfinite(expected[name]) if value.dtype.kind == "f" else True
                if value.dtype.kind == "f" and np.any(finite & ~np.isfinite(value)):
                    raise VariantNotAvailable(
                        variant, f"the converted model gives non-finite {name!r} on {fill}s"
                    )
    finally:
        runtime.close()
        reference.close()
