"""The data every runtime speaks: tensor specs, model metadata, datatypes and the Runtime protocol.

Datatypes are named as in the KServe / Triton v2 inference protocol (``"FP32"``, ``"INT64"``,
``"BYTES"``, ...), so the HTTP layer can pass them through unchanged. Shapes are tuples of ints with
``-1`` for a dynamic dimension (a symbolic or unknown dim in the ONNX graph).

This module imports numpy and the standard library only; it is cheap to import.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

DYNAMIC = -1
"""The value of a dynamic dimension in :attr:`TensorSpec.shape`."""

VARIANT_FULL = "full"
VARIANT_INT8 = "int8"
VARIANT_FP16 = "fp16"
VARIANTS: tuple[str, ...] = (VARIANT_FULL, VARIANT_INT8, VARIANT_FP16)
"""Known model variants: full precision (fp32), int8 quantized, fp16 converted."""

PLATFORM_ONNXRUNTIME = "onnxruntime_onnx"
"""Triton's platform name for ONNX models, reported in :attr:`ModelMetadata.platform`."""


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One input or output of a model.

    ``datatype`` is a v2 datatype name; ``shape`` has ``-1`` (:data:`DYNAMIC`) for each dynamic
    dimension and is ``()`` for a scalar.
    """

    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class CascadeConfig:
    """Where a doubtful answer of this model goes.

    A light model whose top-class probability is below ``confidence_threshold`` (0..1) escalates the
    request to the model named ``escalate_to``.
    """

    escalate_to: str
    confidence_threshold: float


@dataclass(frozen=True, slots=True)
class ModelMetadata:
    """What a client (and the v2 ``GET /v2/models/{m}`` endpoint) needs to know about a model.

    ``version`` is the Triton version directory name (a decimal string); ``variant`` one of
    :data:`VARIANTS`; ``platform`` Triton's platform name; ``labels`` the class names of a
    classifier (line ``i`` of ``labels.txt`` names output index ``i``) or ``None``.
    """

    name: str
    version: str
    variant: str
    platform: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    labels: tuple[str, ...] | None = None
    description: str = ""
    cascade: CascadeConfig | None = None

    def input(self, name: str) -> TensorSpec:
        """The input called ``name``; raises ``KeyError`` when there is none."""
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def output(self, name: str) -> TensorSpec:
        """The output called ``name``; raises ``KeyError`` when there is none."""
        for spec in self.outputs:
            if spec.name == name:
                return spec
        raise KeyError(name)


# v2 datatype name -> numpy dtype. BYTES travels as numpy object arrays (of str or bytes).
_V2_TO_NUMPY: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(np.object_),
}
_NUMPY_TO_V2: dict[np.dtype, str] = {dt: name for name, dt in _V2_TO_NUMPY.items()}

# onnxruntime's element type strings -> v2 datatype names.
_ORT_TO_V2: dict[str, str] = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}

V2_DATATYPES: tuple[str, ...] = tuple(_V2_TO_NUMPY)
"""Every v2 datatype name this package can run."""


def numpy_dtype(datatype: str) -> np.dtype:
    """The numpy dtype for v2 datatype name ``datatype`` (``"BYTES"`` -> object).

    Raises ``ValueError`` for a name that is not a supported v2 datatype (e.g. ``"BF16"``).
    """
    try:
        return _V2_TO_NUMPY[datatype]
    except KeyError:
        raise ValueError(f"unsupported v2 datatype {datatype!r}") from None


def v2_datatype(dtype: np.dtype | type) -> str:
    """The v2 datatype name for a numpy dtype; str, bytes and object dtypes map to ``"BYTES"``.

    Raises ``ValueError`` for a dtype with no v2 equivalent (e.g. complex64).
    """
    dt = np.dtype(dtype)
    if dt.kind in "OSU":
        return "BYTES"
    try:
        return _NUMPY_TO_V2[dt.newbyteorder("=")]
    except KeyError:
        raise ValueError(f"numpy dtype {dt} has no v2 datatype") from None


def ort_type_to_v2(ort_type: str) -> str:
    """The v2 datatype for an onnxruntime type string such as ``"tensor(float)"``.

    Raises ``ValueError`` for non-tensor types (sequences, maps) and element types without a
    numpy equivalent (bfloat16, float8, int4, ...).
    """
    try:
        return _ORT_TO_V2[ort_type]
    except KeyError:
        raise ValueError(f"unsupported onnxruntime type {ort_type!r}") from None


def dims_to_shape(dims: Sequence[object] | None) -> tuple[int, ...]:
    """Turn a session's dims (ints, symbolic names, ``None``) into a shape, ``-1`` for dynamic.

    A ``None`` dims list (unknown rank) is not representable and raises ``ValueError``.
    """
    if dims is None:
        raise ValueError("tensor of unknown rank")
    return tuple(d if isinstance(d, int) and d >= 0 else DYNAMIC for d in dims)


@runtime_checkable
class Runtime(Protocol):
    """A loaded model that can be run.

    Contract:

    - ``metadata`` describes the inputs and outputs ``run`` accepts and returns.
    - ``run(inputs, outputs)`` is blocking and thread-safe (several threads may call it at once).
      It checks that ``inputs`` holds exactly the model's inputs, each a numpy array of the declared
      dtype and a shape matching the declared one (any size on dynamic dims), and that every name
      in ``outputs`` is an output of the model; otherwise it raises ``InvalidInput`` naming the
      problem and runs nothing. It returns ``{output name: array}`` for the requested outputs
      (all of them when ``outputs`` is ``None`` or empty), in the order requested.
    - ``typical_run_seconds`` is the median duration of a run measured at load (warm-up, batch of
      1), and ``warmup_elements`` the number of input elements that run had; a node scales the
      one by a request's elements over the other to decide between running inline and on a
      worker pool.
    - ``batchable`` is True when the first axis of every input and output is one shared dynamic
      batch axis: the rows of separate requests may then be stacked into one ``run`` and its
      outputs split back, row ``i`` of each output answering row ``i`` of the inputs.
    - ``close()`` releases the model; later ``run`` calls raise ``RuntimeClosed``. It is idempotent.
    """

    metadata: ModelMetadata

    @property
    def batchable(self) -> bool: ...

    @property
    def typical_run_seconds(self) -> float: ...

    @property
    def warmup_elements(self) -> int: ...

    def run(
        self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...
