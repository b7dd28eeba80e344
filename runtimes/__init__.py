"""Model execution: onnxruntime sessions, a Triton-layout model repository, model variants.

Light names (datatypes, metadata, errors) are imported eagerly; the ones that pull in onnxruntime
(``OnnxRuntime``, ``OnnxOptions``) and the repository and variant tools load on first use, so
``import runtimes`` stays cheap. This package imports only onnxruntime, onnx, numpy and the
standard library.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from runtimes.base import (
    DYNAMIC,
    VARIANT_FP16,
    VARIANT_FULL,
    VARIANT_INT8,
    VARIANTS,
    CascadeConfig,
    ModelMetadata,
    Runtime,
    TensorSpec,
    numpy_dtype,
    v2_datatype,
)
from runtimes.errors import (
    InvalidInput,
    InvalidModel,
    ModelNotFound,
    RepositoryRootProblem,
    RunFailed,
    RuntimeClosed,
    RuntimeErrorBase,
    VariantNotAvailable,
    VersionNotFound,
)

if TYPE_CHECKING:
    from runtimes.onnx import OnnxOptions, OnnxRuntime
    from runtimes.repository import ModelEntry, ModelRepository
    from runtimes.variants import choose_variant, convert_fp16, make_variants, quantize_int8

_LAZY = {
    "OnnxOptions": "runtimes.onnx",
    "OnnxRuntime": "runtimes.onnx",
    "ModelEntry": "runtimes.repository",
    "ModelRepository": "runtimes.repository",
    "choose_variant": "runtimes.variants",
    "convert_fp16": "runtimes.variants",
    "make_variants": "runtimes.variants",
    "quantize_int8": "runtimes.variants",
}

__all__ = [
    "DYNAMIC",
    "VARIANTS",
    "VARIANT_FP16",
    "VARIANT_FULL",
    "VARIANT_INT8",
    "CascadeConfig",
    "InvalidInput",
    "InvalidModel",
    "ModelEntry",
    "ModelMetadata",
    "ModelNotFound",
    "ModelRepository",
    "OnnxOptions",
    "OnnxRuntime",
    "RepositoryRootProblem",
    "RunFailed",
    "Runtime",
    "RuntimeClosed",
    "RuntimeErrorBase",
    "TensorSpec",
    "VariantNotAvailable",
    "VersionNotFound",
    "choose_variant",
    "convert_fp16",
    "make_variants",
    "numpy_dtype",
    "quantize_int8",
    "v2_datatype",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'runtimes' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
