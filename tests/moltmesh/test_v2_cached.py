"""The v2 codec's cached paths (request header plans, response templates) agree with the full
parse and the general encoder, and never let one request's objects leak into another's."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moltmesh import v2
from moltmesh.client import decode_answer


def binary_body(arrays: dict[str, np.ndarray], **extra: object) -> tuple[bytes, int]:
    inputs = [
        {
            "name": name,
            "datatype": v2.v2_datatype(a.dtype),
            "shape": list(a.shape),
            "parameters": {"binary_data_size": a.nbytes},
        }
        for name, a in arrays.items()
    ]
    header = json.dumps({"inputs": inputs, **extra}).encode()
    return header + b"".join(a.tobytes() for a in arrays.values()), len(header)


def test_second_request_with_the_same_header_decodes_its_own_data():
    rng = np.random.default_rng(1)
    first = {"a": rng.random((2, 3), dtype=np.float32), "b": np.array([[7], [9]], np.int64)}
    second = {"a": rng.random((2, 3), dtype=np.float32), "b": np.array([[1], [2]], np.int64)}
    extra = {"id": "r", "parameters": {"binary_data_output": True}, "outputs": [{"name": "p"}]}
    body1, n1 = binary_body(first, **extra)
    body2, n2 = binary_body(second, **extra)
    assert body1[:n1] == body2[:n2]  # same header: the second goes through the cached plan
    r1, r2 = v2.parse_infer_request(body1, n1), v2.parse_infer_request(body2, n2)
    for got, want in ((r1, first), (r2, second)):
        assert got.inputs.keys() == want.keys()
        for name, array in want.items():
            np.testing.assert_array_equal(got.inputs[name], array)
            assert got.inputs[name].dtype == array.dtype.newbyteorder("<")
        assert got.request_id == "r" and got.binary_output
        assert [(o.name, o.binary) for o in got.outputs] == [("p", True)]
    assert r1.outputs is not r2.outputs and r1.parameters is not r2.parameters


def test_binary_inputs_view_the_body_without_copying():
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    body, n = binary_body({"x": array})
    for _ in range(2):  # full parse, then the cached plan
        x = v2.parse_infer_request(body, n).inputs["x"]
        assert not x.flags.owndata and not x.flags.writeable
        np.testing.assert_array_equal(x, array)


def test_a_client_changing_parsed_parameters_does_not_change_the_next_request():
    body, n = binary_body({"x": np.zeros(2, np.float32)}, parameters={"urgency": 0.5})
    v2.parse_infer_request(body, n).parameters["urgency"] = 1.0
    assert v2.parse_infer_request(body, n).parameters == {"urgency": 0.5}


@pytest.mark.parametrize("delta", [-4, 4])
def test_cached_header_with_a_body_of_the_wrong_size_gets_the_full_error(delta: int):
    body, n = binary_body({"x": np.zeros(4, np.float32)})
    v2.parse_infer_request(body, n)  # cached now
    wrong = body[:delta] if delta < 0 else body + b"\0" * delta
    with pytest.raises(v2.V2Error) as cached:
        v2.parse_infer_request(wrong, n)
    v2._PLANS.clear()
    with pytest.raises(v2.V2Error) as full:
        v2.parse_infer_request(wrong, n)
    assert str(cached.value) == str(full.value)


def test_json_and_bytes_inputs_are_never_planned():
    tensor = {"name": "x", "datatype": "FP32", "shape": [2], "data": [1, 2]}
    header = json.dumps({"inputs": [tensor]}).encode()
    v2._PLANS.clear()
    v2.parse_infer_request(header, len(header))
    blob = (3).to_bytes(4, "little") + b"abc"
    s = {"name": "s", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 7}}
    header = json.dumps({"inputs": [s]}).encode()
    assert v2.parse_infer_request(header + blob, len(header)).inputs["s"].tolist() == [b"abc"]
    assert not v2._PLANS


def test_plan_cache_is_bounded():
    v2._PLANS.clear()
    for i in range(v2.MAX_PLANS + 10):
        body, n = binary_body({f"x{i}": np.zeros(1, np.float32)})
        v2.parse_infer_request(body, n)
    assert len(v2._PLANS) == v2.MAX_PLANS


DTYPES = [np.float32, np.float64, np.int8, np.int64, np.uint16, np.bool_, np.float16]


@settings(max_examples=60, deadline=None)
@given(
    shapes=st.lists(st.lists(st.integers(0, 3), max_size=3), min_size=1, max_size=3),
    dtype_index=st.integers(0, len(DTYPES) - 1),
    request_id=st.none() | st.text(max_size=8),
    parameters=st.none() | st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=3),
)
def test_templated_binary_response_is_byte_for_byte_the_general_one(
    shapes: list[list[int]], dtype_index: int, request_id, parameters
):
    dtype = DTYPES[dtype_index]
    outputs = {f"out{i}": np.ones(shape, dtype) for i, shape in enumerate(shapes)}
    binary = dict.fromkeys(outputs, True)
    general = v2._encode_general("m", "1", outputs, binary, request_id, parameters)
    for _ in range(2):  # builds the template, then reuses it
        assert v2.encode_infer_response("m", "1", outputs, binary, request_id, parameters) == (
            general
        )
    body, header_length = general
    answer = decode_answer(body, str(header_length))
    for name, array in outputs.items():
        np.testing.assert_array_equal(answer.outputs[name], array)


def test_response_with_any_json_output_takes_the_general_path():
    outputs = {"a": np.ones((1, 2), np.float32), "b": np.array([b"x"], dtype=object)}
    for binary in ({"a": True, "b": False}, {"a": True, "b": True}, {"a": False, "b": True}):
        want = v2._encode_general("m", "1", outputs, binary, "id", {"k": "v"})
        assert v2.encode_infer_response("m", "1", outputs, binary, "id", {"k": "v"}) == want


def test_non_string_parameters_are_encoded_as_given():
    outputs = {"a": np.ones(2, np.float32)}
    # 1, 1.0 and True are equal (and hash alike) but must not share a cached header
    for params in ({"k": 1}, {"k": True}, {"k": 1.0}, {"nested": {"k": [1, 2]}}, {"k": "1"}):
        want = v2._encode_general("m", "1", outputs, {"a": True}, None, params)
        assert v2.encode_infer_response("m", "1", outputs, {"a": True}, None, params) == want


def test_a_bytearray_body_is_parsed_too():
    body, n = binary_body({"x": np.arange(3, dtype=np.int32)})
    for _ in range(2):
        x = v2.parse_infer_request(bytearray(body), n).inputs["x"]
        np.testing.assert_array_equal(x, np.arange(3, dtype=np.int32))
