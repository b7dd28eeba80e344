"""JSON tensor data must be what its datatype says: no null, no text for numbers, no fractions
or out-of-range values for integers; flags are JSON booleans. Silent coercion (null -> NaN,
1.9 -> 1, "false" -> True) would hand the model something the client did not send."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from moltmesh import v2


def request(datatype: str, data: Any, shape: list[int] | None = None, **top: Any) -> bytes:
    shape = [len(data)] if shape is None else shape
    tensor = {"name": "x", "datatype": datatype, "shape": shape, "data": data}
    return json.dumps({"inputs": [tensor], **top}).encode()


@pytest.mark.parametrize(
    "datatype, data, message",
    [
        ("FP32", [None], "null"),
        ("FP32", [1.0, None, 2.0], "null"),
        ("FP64", [[1.0], [None]], "null"),
        ("FP32", ["1.5"], "text"),
        ("FP32", [1.0, 1e39], "FP32's range"),  # numpy would make it inf
        ("FP16", [70000.0], "FP16's range"),
        ("FP16", [float("inf"), 70000.0], "FP16's range"),
        ("INT32", [1.9], "integer"),
        ("INT64", [1, 2.5], "integer"),
        ("INT32", [None], "null"),
        ("UINT8", [300], "range"),
        ("UINT8", [-1], "range"),
        ("INT8", [128], "range"),
        ("INT64", [2**64], "range"),
        ("BOOL", ["x"], "text"),
        ("BOOL", [None], "null"),
        ("BOOL", [2], "BOOL"),
        ("BOOL", [0.5], "BOOL"),
    ],
)
def test_json_data_that_is_not_its_datatype_is_refused(datatype: str, data: list, message: str):
    with pytest.raises(v2.V2Error, match=message):
        v2.parse_infer_request(request(datatype, data), None)


def test_integer_nan_is_refused():
    body = b'{"inputs":[{"name":"x","datatype":"INT32","shape":[1],"data":[NaN]}]}'
    with pytest.raises(v2.V2Error, match="integer"):
        v2.parse_infer_request(body, None)


@pytest.mark.parametrize(
    "datatype, data, expected",
    [
        ("INT32", [1.0, -2.0], [1, -2]),  # integral floats are integers
        ("INT8", [-128, 127], [-128, 127]),
        ("UINT8", [0, 255], [0, 255]),
        ("INT64", [2**63 - 1, -(2**63)], [2**63 - 1, -(2**63)]),
        ("UINT64", [2**64 - 1, 0], [2**64 - 1, 0]),
        ("BOOL", [True, False], [True, False]),
        ("BOOL", [1, 0], [True, False]),
        ("FP32", [1, 2.5], [1.0, 2.5]),
        ("FP16", [0.5, -1], [0.5, -1.0]),
        ("INT32", [], []),
    ],
)
def test_json_data_of_its_datatype_is_exact(datatype: str, data: list, expected: list):
    array = v2.parse_infer_request(request(datatype, data), None).inputs["x"]
    assert array.dtype == v2.DTYPES[datatype]
    assert array.tolist() == expected


def test_nan_and_infinity_literals_stay_what_they_are_for_floats():
    body = b'{"inputs":[{"name":"x","datatype":"FP32","shape":[3],"data":[NaN, 1.0, -Infinity]}]}'
    array = v2.parse_infer_request(body, None).inputs["x"]
    assert np.isnan(array[0]) and array[1] == 1.0 and array[2] == -np.inf


@pytest.mark.parametrize("flag", ["false", "true", 0, 1, None, [True]])
def test_binary_flags_must_be_json_booleans(flag: Any):
    top = {"parameters": {"binary_data_output": flag}}
    with pytest.raises(v2.V2Error, match="binary_data_output"):
        v2.parse_infer_request(request("FP32", [1.0], **top), None)
    outputs = {"outputs": [{"name": "y", "parameters": {"binary_data": flag}}]}
    with pytest.raises(v2.V2Error, match="binary_data"):
        v2.parse_infer_request(request("FP32", [1.0], **outputs), None)


def test_binary_flags_as_booleans_are_honoured():
    top = {
        "parameters": {"binary_data_output": True},
        "outputs": [{"name": "y"}, {"name": "z", "parameters": {"binary_data": False}}],
    }
    req = v2.parse_infer_request(request("FP32", [1.0], **top), None)
    assert req.binary_output
    assert [(o.name, o.binary) for o in req.outputs or []] == [("y", True), ("z", False)]
