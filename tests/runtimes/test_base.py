"""Datatype mapping and metadata types of runtimes.base."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from runtimes.base import (
    V2_DATATYPES,
    CascadeConfig,
    ModelMetadata,
    TensorSpec,
    dims_to_shape,
    numpy_dtype,
    ort_type_to_v2,
    v2_datatype,
)


@pytest.mark.parametrize(
    ("datatype", "dtype"),
    [
        ("FP32", np.float32),
        ("FP16", np.float16),
        ("FP64", np.float64),
        ("INT64", np.int64),
        ("INT32", np.int32),
        ("INT8", np.int8),
        ("UINT8", np.uint8),
        ("BOOL", np.bool_),
        ("BYTES", np.object_),
    ],
)
def test_numpy_dtype_and_back(datatype: str, dtype: type) -> None:
    assert numpy_dtype(datatype) == np.dtype(dtype)
    assert v2_datatype(np.dtype(dtype)) == datatype


def test_every_v2_datatype_round_trips() -> None:
    for name in V2_DATATYPES:
        assert v2_datatype(numpy_dtype(name)) == name


def test_strings_and_bytes_are_bytes() -> None:
    assert v2_datatype(np.array(["a"]).dtype) == "BYTES"
    assert v2_datatype(np.array([b"a"]).dtype) == "BYTES"


def test_byte_order_does_not_matter() -> None:
    assert v2_datatype(np.dtype(">f4")) == "FP32"


def test_unsupported_datatypes_raise_value_error() -> None:
    with pytest.raises(ValueError, match="BF16"):
        numpy_dtype("BF16")
    with pytest.raises(ValueError, match="complex64"):
        v2_datatype(np.dtype(np.complex64))
    with pytest.raises(ValueError, match="seq"):
        ort_type_to_v2("seq(tensor(float))")


def test_ort_types_map_to_v2() -> None:
    assert ort_type_to_v2("tensor(float)") == "FP32"
    assert ort_type_to_v2("tensor(int64)") == "INT64"
    assert ort_type_to_v2("tensor(string)") == "BYTES"


def test_dims_to_shape_marks_dynamic_dims() -> None:
    assert dims_to_shape(["N", 1, None, 32]) == (-1, 1, -1, 32)
    assert dims_to_shape([]) == ()
    with pytest.raises(ValueError):
        dims_to_shape(None)


def test_metadata_is_frozen_and_looks_up_tensors() -> None:
    spec = TensorSpec("x", "FP32", (-1, 4))
    meta = ModelMetadata(
        name="m",
        version="1",
        variant="full",
        platform="onnxruntime_onnx",
        inputs=(spec,),
        outputs=(TensorSpec("y", "FP32", (-1, 2)),),
        labels=("a", "b"),
        cascade=CascadeConfig("big", 0.9),
    )
    assert meta.input("x") is spec
    assert meta.output("y").shape == (-1, 2)
    with pytest.raises(KeyError):
        meta.input("y")
    with pytest.raises(dataclasses.FrozenInstanceError):
        meta.name = "other"  # type: ignore[misc]
