"""The onnxruntime implementation of :class:`~runtimes.base.Runtime`.

``OnnxRuntime(path)`` loads one ``.onnx`` file into an ``onnxruntime.InferenceSession``, reads the
model's inputs and outputs (names, v2 datatypes, shapes with ``-1`` for dynamic dims) from the
session, runs it a few times on zeros to warm it up, and keeps the median warm-up duration as
``typical_run_seconds``.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from runtimes.base import (
    DYNAMIC,
    PLATFORM_ONNXRUNTIME,
    VARIANT_FULL,
    CascadeConfig,
    ModelMetadata,
    TensorSpec,
    dims_to_shape,
    numpy_dtype,
    ort_type_to_v2,
)
from runtimes.errors import InvalidInput, InvalidModel, RunFailed, RuntimeClosed
from runtimes.validation import InputValidator

log = logging.getLogger(__name__)

CPU_PROVIDER = "CPUExecutionProvider"
_ORT_LOG_FATAL_ONLY = 4  # onnxruntime severity: 0 verbose .. 3 error, 4 fatal; errors are raised


@dataclass(frozen=True, slots=True)
class OnnxOptions:
    """How to build a session.

    ``intra_op_threads`` / ``inter_op_threads``: onnxruntime thread pool sizes, 0 lets onnxruntime
    choose (one per physical core). ``providers``: execution providers in order of preference;
    those not compiled into the installed onnxruntime are skipped and the CPU provider is always
    kept last as the fallback. ``warmup_runs``: timed runs on zeros at load, after one untimed
    first run (which allocates); 0 skips warm-up, and then ``typical_run_seconds`` is ``inf``
    (unknown, so a node treats the model as slow).
    """

    intra_op_threads: int = 0
    inter_op_threads: int = 0
    providers: tuple[str, ...] = (CPU_PROVIDER,)
    warmup_runs: int = 3

    def __post_init__(self) -> None:
        for field in ("intra_op_threads", "inter_op_threads", "warmup_runs"):
            value = getattr(self, field)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"OnnxOptions.{field} must be an int >= 0, got {value!r}")
        if isinstance(self.providers, str):
            raise ValueError("OnnxOptions.providers must be a sequence of provider names")


def select_providers(wanted: Sequence[str]) -> list[str]:
    """The providers of ``wanted`` that this onnxruntime has, in order, with the CPU one last."""
    available = set(ort.get_available_providers())
    chosen = [p for p in wanted if p in available and p != CPU_PROVIDER]
    skipped = [p for p in wanted if p not in available]
    if skipped:
        log.info("onnx providers not available, skipped: %s", ", ".join(skipped))
    chosen.append(CPU_PROVIDER)
    return chosen


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def _specs(path: Path, args: Sequence[ort.NodeArg], kind: str) -> tuple[TensorSpec, ...]:
    specs = []
    for arg in args:
        try:
            specs.append(TensorSpec(arg.name, ort_type_to_v2(arg.type), dims_to_shape(arg.shape)))
        except ValueError as exc:
            raise InvalidModel(path, f"{kind} {arg.name!r}: {exc}") from None
    return tuple(specs)


def _dim_names(dims: Sequence[object] | None) -> list[str | None]:
    return [d if isinstance(d, str) else None for d in dims or ()]


def _shared_batch_axis(session: ort.InferenceSession) -> bool:
    """True when every input and output's first dim is the same symbolic name (a batch axis).

    An anonymous dynamic dim does not count: nothing says that the outputs' first axis follows
    the inputs' one.
    """
    firsts = set()
    for arg in (*session.get_inputs(), *session.get_outputs()):
        dims = arg.shape or ()
        if not dims or not isinstance(dims[0], str) or not dims[0]:
            return False
        firsts.add(dims[0])
    return len(firsts) == 1


def _raw_run(session: ort.InferenceSession) -> Callable[..., list[Any]]:
    """``session.run`` without the Python wrapper's per-call re-checks, where that is safe.

    The wrapper re-validates input names, WebGPU graph capture and OrtValue ownership (~8 µs a
    call, measured with bench/serve.py's profile) before calling the compiled session, and
    retries on another provider when an accelerator fails. ``InputValidator`` has checked the
    names and the feed holds numpy arrays only, so on a CPU-only session the compiled ``run``
    (same arguments, same exceptions) is called directly; any other session, or an onnxruntime
    without the private ``_sess``, keeps the wrapper.
    """
    inner = getattr(session, "_sess", None)
    if inner is None or not callable(getattr(inner, "run", None)):
        return session.run
    if list(session.get_providers()) != [CPU_PROVIDER]:
        return session.run
    return inner.run


def _check_labels(metadata: ModelMetadata) -> None:
    """Warn when no output's last dimension has one entry per label (a misplaced labels.txt)."""
    if metadata.labels is None:
        return
    count = len(metadata.labels)
    sizes = [spec.shape[-1] for spec in metadata.outputs if spec.shape]
    if sizes and all(size not in (count, DYNAMIC) for size in sizes):
        log.warning(
            "model %s has %d labels but its outputs' last dimensions are %s",
            metadata.name,
            count,
            sizes,
        )


WARMUP_DYNAMIC_SIZES = (1, 32, 224)
"""Sizes tried, in order, on the dynamic dims after the first (e.g. an image's height and
width) when warming up: a convolution without padding cannot run on 1 × 1."""


def warmup_inputs(metadata: ModelMetadata, fill: int = 0, size: int = 1) -> dict[str, np.ndarray]:
    """Inputs of the right dtypes filled with ``fill``: a size of 1 on a dynamic first dim (the
    batch) and ``size`` on every other dynamic dim."""
    feed: dict[str, np.ndarray] = {}
    for spec in metadata.inputs:
        shape = tuple(
            (1 if i == 0 else size) if d == DYNAMIC else d for i, d in enumerate(spec.shape)
        )
        if spec.datatype == "BYTES":
            feed[spec.name] = np.full(shape, str(fill), dtype=object)
        else:
            feed[spec.name] = np.full(shape, fill, dtype=numpy_dtype(spec.datatype))
    return feed


class OnnxRuntime:
    """One ONNX model loaded into onnxruntime; implements :class:`~runtimes.base.Runtime`.

    Construction raises :class:`InvalidModel` when the file is missing, onnxruntime cannot load
    it, an input or output is not a tensor of a supported element type, or the warm-up runs (on
    zeros, then on ones) both fail. ``run`` is thread-safe: onnxruntime sessions accept concurrent
    ``run`` calls.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        name: str | None = None,
        version: str = "1",
        variant: str = VARIANT_FULL,
        options: OnnxOptions | None = None,
        labels: Sequence[str] | None = None,
        description: str = "",
        cascade: CascadeConfig | None = None,
    ) -> None:
        """Load ``path``; ``description`` defaults to the ONNX model's own doc string."""
        self.path = Path(path)
        self.options = options or OnnxOptions()
        if not self.path.is_file():
            raise InvalidModel(self.path, "file not found")
        sess_options = ort.SessionOptions()
        sess_options.intra_op_num_threads = self.options.intra_op_threads
        sess_options.inter_op_num_threads = self.options.inter_op_threads
        sess_options.log_severity_level = _ORT_LOG_FATAL_ONLY
        try:
            session = ort.InferenceSession(
                str(self.path),
                sess_options=sess_options,
                providers=select_providers(self.options.providers),
            )
        except Exception as exc:  # onnxruntime raises its own (pybind) exception types
            reason = f"onnxruntime cannot load it: {_first_line(exc)}"
            raise InvalidModel(self.path, reason) from None
        self.metadata = ModelMetadata(
            name=name or self.path.stem,
            version=version,
            variant=variant,
            platform=PLATFORM_ONNXRUNTIME,
            inputs=_specs(self.path, session.get_inputs(), "input"),
            outputs=_specs(self.path, session.get_outputs(), "output"),
            labels=tuple(labels) if labels is not None else None,
            description=description or session.get_modelmeta().description,
            cascade=cascade,
        )
        _check_labels(self.metadata)
        self.providers: tuple[str, ...] = tuple(session.get_providers())
        self._validator = InputValidator(
            self.metadata, {arg.name: _dim_names(arg.shape) for arg in session.get_inputs()}
        )
        self._batchable = _shared_batch_axis(session)
        self._session: ort.InferenceSession | None = session
        self._raw_run: Callable[..., list[Any]] | None = _raw_run(session)
        self._warmup_elements = 1
        self._typical_run_seconds = self._warm_up(session)
        log.debug(
            "loaded model %s version %s variant %s from %s: typical run %.6f s",
            self.metadata.name,
            version,
            variant,
            self.path,
            self._typical_run_seconds,
        )

    @property
    def batchable(self) -> bool:
        """Whether every input and output starts with the same named dynamic axis."""
        return self._batchable

    @property
    def typical_run_seconds(self) -> float:
        """Median warm-up run duration in seconds (``inf`` when warm-up was skipped)."""
        return self._typical_run_seconds

    @property
    def warmup_elements(self) -> int:
        """Elements of all inputs together in the warm-up run ``typical_run_seconds`` timed."""
        return self._warmup_elements

    def _warm_up(self, session: ort.InferenceSession) -> float:
        runs = self.options.warmup_runs
        if runs == 0:
            return float("inf")
        errors = []
        dynamic = any(DYNAMIC in spec.shape[1:] for spec in self.metadata.inputs)
        for size in WARMUP_DYNAMIC_SIZES if dynamic else (1,):
            for fill in (0, 1):  # a model that cannot run on zeros may run on ones
                feed = warmup_inputs(self.metadata, fill, size)
                try:
                    session.run(None, feed)  # the first run allocates; it is not timed
                    durations = []
                    for _ in range(runs):
                        start = time.perf_counter()
                        session.run(None, feed)
                        durations.append(time.perf_counter() - start)
                except Exception as exc:
                    errors.append(f"size {size}, fill {fill}: {_first_line(exc)}")
                    continue
                self._warmup_elements = max(1, sum(a.size for a in feed.values()))
                return statistics.median(durations)
        raise InvalidModel(self.path, "warm-up runs failed: " + "; ".join(errors))

    def run(
        self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Run the model; see :class:`~runtimes.base.Runtime` for the contract.

        Raises ``InvalidInput`` when validation fails or onnxruntime rejects the values (e.g. two
        dynamic dims that must agree do not), ``RunFailed`` for any other onnxruntime failure, and
        ``RuntimeClosed`` after ``close``.
        """
        raw_run = self._raw_run  # before _session: close() clears them in the other order
        if self._session is None or raw_run is None:
            raise RuntimeClosed(self.metadata.name)
        feed = self._validator.prepare_inputs(inputs)
        names = self._validator.check_outputs(outputs)
        try:
            results = raw_run(list(names), feed, None)
        except Exception as exc:  # onnxruntime's pybind exception types are not importable stably
            reason = _first_line(exc)
            if "INVALID_ARGUMENT" in reason or type(exc).__name__ == "InvalidArgument":
                raise InvalidInput(
                    f"model {self.metadata.name!r} rejected the inputs: {reason}"
                ) from None
            raise RunFailed(self.metadata.name, reason) from None
        return dict(zip(names, results, strict=True))

    def close(self) -> None:
        """Release the session; idempotent. Runs already in progress finish normally."""
        self._session = None  # first: run() reads _raw_run before _session
        self._raw_run = None

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has been called."""
        return self._session is None

    def __enter__(self) -> OnnxRuntime:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        m = self.metadata
        return f"OnnxRuntime({m.name!r}, version={m.version!r}, variant={m.variant!r})"
